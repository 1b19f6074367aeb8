"""Azure AI Speech: configuration (``config``) and a local service peer (``peer``) that
speaks the Speech SDK's WebSocket protocol. The engines live in ``processors.stt`` and
``processors.tts``."""
