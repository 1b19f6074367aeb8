"""The local ACS, for tests, demos and the perf team: ``rest.AcsRestPeer`` is the Call
Automation REST endpoint that the official SDK talks to, checking its HMAC signatures."""
