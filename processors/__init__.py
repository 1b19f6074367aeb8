"""Frame processors: audio, speech-to-text, text-to-speech, LLM, text and side-cars."""
