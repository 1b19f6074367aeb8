"""eSpeak NG in-process through ctypes: the tiny, fast, robotic embedded TTS.

The library and its data come from the ``espeakng-loader`` wheel. libespeak-ng keeps all
of its state in globals (one voice, one parameter set, one callback per process) and is
not thread-safe, so:

- it is initialised once per process, in synchronous mode, with a callback that hands
  audio to whichever synthesis currently holds ``_LOCK``;
- each sentence is synthesised under ``_LOCK``, after re-applying the engine's voice and
  parameters (two engines with different voices may share the process);
- the lock is released before a chunk is yielded, so a slow consumer never blocks other
  calls, and ``close()`` on the generator takes effect at the next sentence.

What the lock costs: the library cannot be used from two threads at once (every entry
point reads and writes the same globals), so it is not lifted. A sentence holds it for
about 2 ms (measured: median 2.2 ms for a 10-word sentence, 2.9 s of audio; RTF 0.0008;
``perf/speech_engines.py``). N calls asking at the same moment therefore wait up to
N x 2 ms for their sentence: 20 ms for ten calls, 0.2 s for a hundred. In practice fewer
wait on the lock itself: the offload executor runs one step per thread, so at most one
thread per core waits here, and the other calls' sentences wait their turn in its fair
queue instead.

Piper links its own private copy of eSpeak NG (for phonemisation); both copies are
loaded with ``RTLD_LOCAL``, so they do not share or clobber each other's state.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Generator

from processors.tts.engine import clean_text, synthesis_units

__all__ = ["EspeakEngine"]

logger = logging.getLogger(__name__)

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit()
_EE_OK = 0
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # keep the pause after the last clause: sentences are synthesised apart
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3

# int callback(short *wav, int numsamples, espeak_EVENT *events); the events are unused.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_LOCK = threading.Lock()
"""Serialises every call into libespeak-ng, and guards the state below."""

_lib: ctypes.CDLL | None = None
_sample_rate = 0
_sink: list[bytes] | None = None  # where the callback puts audio for the current call


def _on_audio(wav: ctypes._Pointer[ctypes.c_short], numsamples: int, _events: int | None) -> int:
    # Runs inside espeak_Synth, on the calling thread, with _LOCK held. Must not raise:
    # ctypes would only print the exception and carry on.
    if wav and numsamples > 0 and _sink is not None:
        _sink.append(ctypes.string_at(wav, numsamples * 2))
    return 0  # 0: continue synthesis


# Kept at module level: libespeak-ng holds a raw pointer to it for the process lifetime.
_CALLBACK = _SynthCallback(_on_audio)


def _load() -> tuple[ctypes.CDLL, int]:
    """Load and initialise libespeak-ng once; call with _LOCK held."""
    global _lib, _sample_rate
    if _lib is not None:
        return _lib, _sample_rate
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    # Declare every signature: ctypes would otherwise pass ints and truncate pointers.
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,  # text
        ctypes.c_size_t,  # size in bytes, including the terminating NUL
        ctypes.c_uint,  # position
        ctypes.c_int,  # position type
        ctypes.c_uint,  # end position (0: none)
        ctypes.c_uint,  # flags
        ctypes.POINTER(ctypes.c_uint),  # unique identifier (may be NULL)
        ctypes.c_void_p,  # user data
    ]
    lib.espeak_Synth.restype = ctypes.c_int

    data_path = espeakng_loader.get_data_path().encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed ({rate}) with data in {data_path!r}")
    lib.espeak_SetSynthCallback(_CALLBACK)
    logger.debug("libespeak-ng initialised at %d Hz", rate)
    _lib, _sample_rate = lib, rate
    return lib, rate


class EspeakEngine:
    """An eSpeak NG voice; see :class:`processors.tts.engine.TTSEngine`.

    Args:
        voice: eSpeak voice name, e.g. ``"en-us"``, ``"en"`` or ``"en-us+f3"``.
        rate: Speaking rate in words per minute (eSpeak's default is 175).
        pitch: Base pitch, 0-100 (default 50).
        volume: Amplitude, 0-200 (default 100).

    Raises:
        ValueError: the voice is unknown to the bundled eSpeak data.
    """

    name: str = "espeak"

    def __init__(self, *, voice: str = "en-us", rate: int = 175, pitch: int = 50, volume: int = 100) -> None:
        self._voice = voice.encode()
        self._parameters = ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_VOLUME, volume))
        with _LOCK:
            lib, self.sample_rate = _load()
            if lib.espeak_SetVoiceByName(self._voice) != _EE_OK:
                raise ValueError(f"unknown eSpeak voice {voice!r}")

    def synthesize(self, text: str) -> Generator[bytes, None, None]:
        """Yield PCM16 mono audio at :attr:`sample_rate`, one chunk per sentence."""
        for sentence in synthesis_units(clean_text(text)):
            audio = self._synthesize_sentence(sentence)
            if audio:
                yield audio

    def _synthesize_sentence(self, sentence: str) -> bytes:
        global _sink
        data = sentence.encode("utf-8")
        buffer = ctypes.create_string_buffer(data)  # NUL-terminated copy
        chunks: list[bytes] = []
        with _LOCK:
            lib, _ = _load()
            lib.espeak_SetVoiceByName(self._voice)
            for parameter, value in self._parameters:
                lib.espeak_SetParameter(parameter, value, 0)
            _sink = chunks
            try:
                error = lib.espeak_Synth(
                    buffer,
                    len(data) + 1,
                    0,
                    _POS_CHARACTER,
                    0,
                    _CHARS_UTF8 | _ENDPAUSE,
                    None,
                    None,
                )
            finally:
                _sink = None
        if error != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({error}) on {sentence[:40]!r}")
        return b"".join(chunks)
