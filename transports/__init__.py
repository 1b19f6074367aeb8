"""The edges of a call. ``base.Transport`` owns the duplex contract every transport shares
(inbound audio, paced playout, bot speaking events, flush), ``pacer`` paces them all with
one ticker per worker; local/ has the scripted callers. ACS and WebRTC come in later issues."""
