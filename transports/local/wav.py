"""WAV files in and out. Calls use PCM16 mono; files may be anything common.

``read_wav`` accepts what recorders and editors write: any sample rate, 1 to 8
channels (mixed down to mono by averaging), and samples as 8-bit unsigned, 16-, 24- or
32-bit signed integers, or 32- or 64-bit floats, in plain PCM or ``WAVE_FORMAT_EXTENSIBLE``
files (the stdlib ``wave`` module reads only 8/16/24/32-bit integer PCM, and not the
extensible header most 24-bit and multichannel files use, so the RIFF chunks are read
here). Given ``rate``, it also converts to that rate (soxr, high quality, whole file at
once), so a 44.1 kHz stereo recording plays on a 16 kHz line. Anything else (A-law,
mu-law, ADPCM, MP3 in a WAV) is a ``FrameError`` saying what the file holds.
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import soxr

from pipeline.errors import FrameError

__all__ = ["MAX_CHANNELS", "read_wav", "write_wav"]

MAX_CHANNELS = 8
_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM", 0x0055: "MP3"}


def read_wav(path: str | Path, rate: int | None = None) -> tuple[bytes, int]:
    """(PCM16 mono bytes, their sample rate) of a WAV file, at ``rate`` if given."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FrameError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    samples, file_rate = _decode(data, str(path))
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate is not None and rate != file_rate:
        samples = soxr.resample(samples, file_rate, rate, quality="HQ")
        file_rate = rate
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return pcm, file_rate


def write_wav(path: str | Path, pcm: bytes, sample_rate: int) -> None:
    """Write PCM16 mono audio as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def _decode(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Samples as float64 in [-1, 1), shape (frames,) or (frames, channels), and the rate."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise FrameError(f"{name}: not a readable WAV file (no RIFF/WAVE header)")
    fmt: bytes | None = None
    body: bytes | None = None
    pos = 12
    while pos + 8 <= len(data) and (fmt is None or body is None):
        chunk_id, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        content = data[pos + 8:pos + 8 + size]  # a truncated last chunk keeps what is there
        if chunk_id == b"fmt ":
            fmt = content
        elif chunk_id == b"data":
            body = content
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    if fmt is None or len(fmt) < 16:
        raise FrameError(f"{name}: not a readable WAV file (no valid 'fmt ' chunk)")
    if body is None:
        raise FrameError(f"{name}: not a readable WAV file (no 'data' chunk)")
    tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # the sub-format GUID starts with the real tag
    if tag not in (_PCM, _FLOAT):
        kind = _NAMES.get(tag, f"format 0x{tag:04x}")
        raise FrameError(f"{name}: {kind} WAV; only PCM (8/16/24/32-bit) and float (32/64-bit) are supported")
    if not 1 <= channels <= MAX_CHANNELS:
        raise FrameError(f"{name}: {channels} channels; 1 to {MAX_CHANNELS} are supported")
    if rate <= 0:
        raise FrameError(f"{name}: invalid sample rate {rate}")
    width = bits // 8
    supported = (8, 16, 24, 32) if tag == _PCM else (32, 64)
    if bits not in supported or align != width * channels:
        kinds = "/".join(str(b) for b in supported)
        raise FrameError(f"{name}: {bits}-bit {'PCM' if tag == _PCM else 'float'} WAV with {channels} channels and "
                         f"{align}-byte frames; {kinds}-bit samples are supported")
    usable = len(body) - len(body) % align
    raw = np.frombuffer(body[:usable], dtype=np.uint8)
    if tag == _FLOAT:
        samples = np.frombuffer(body[:usable], dtype="<f4" if bits == 32 else "<f8").astype(np.float64)
        samples = np.nan_to_num(np.clip(samples, -1.0, 1.0))
    elif bits == 8:
        samples = (raw.astype(np.float64) - 128.0) / 128.0  # 8-bit WAV is unsigned
    elif bits == 24:
        triples = raw.reshape(-1, 3).astype(np.int32)
        ints = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        samples = (np.where(ints >= 1 << 23, ints - (1 << 24), ints)).astype(np.float64) / float(1 << 23)
    else:
        dtype = "<i2" if bits == 16 else "<i4"
        samples = np.frombuffer(body[:usable], dtype=dtype).astype(np.float64) / float(1 << (bits - 1))
    if channels > 1:
        samples = samples.reshape(-1, channels)
    return samples, rate
