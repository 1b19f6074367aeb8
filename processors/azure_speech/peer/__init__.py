"""A local Azure AI Speech service (``voicegraph peer speech``) that speaks the Speech SDK's
WebSocket protocol, backed by the embedded STT and TTS engines. See ``app.py``."""
