"""The edges of a call: local (files, text, loopback) now; ACS and WebRTC in later issues."""
