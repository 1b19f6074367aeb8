"""Local transports: a scripted text caller now; WAV files and loopback pairs with speech."""
