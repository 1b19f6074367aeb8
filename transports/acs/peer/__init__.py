"""The local ACS, for tests, demos and the perf team: ACS's side of the control plane,
speaking ACS's documented protocols to the official SDK and to our server.

- ``rest.AcsRestPeer``: the Call Automation REST endpoint (the SDK's paths, HMAC-checked),
  with the signer's OpenID configuration and JWKS;
- ``switchboard.Switchboard``: the calls, what follows each request, the media hook;
- ``calls.PeerCall``: one call's state and JSON; ``callbacks.CallbackPoster``: signed
  CloudEvents to the callback URI, in order per call, with retries;
- ``connect.MediaConnect`` / ``connect.MediaHook``: the contract with the media caller;
- ``eventgrid.EventGridSender``: the subscription handshake and ``IncomingCall``;
- ``app.create_peer``: the standalone peer of ``voicegraph peer acs``;
- ``signer.TokenSigner``: the RS256 key its tokens are signed with.
"""
