"""voicegraph's application shell: CLI, settings, the ASGI app, call reports."""

__version__ = "0.1.0"
