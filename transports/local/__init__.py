"""Local transports: a scripted speaking caller (a script or a WAV file) and a scripted text caller."""
