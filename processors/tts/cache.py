"""The worker's TTS audio cache: fixed texts are synthesised once and replayed from memory.

A phone agent says the same things over and over: the greeting, IVR prompts, rule
answers, confirmations. Synthesising them again on every call costs a Piper sentence
(tens to hundreds of milliseconds of a core) each time and delays the first audio by as
much. With the cache on (``tts: {cache: true}``), a clause spoken whole is kept, and the
next time any call of the worker says the same clause with the same voice it starts at
once: no synthesis, no executor step, one dictionary look-up on the loop.

* **Keys.** Audio is kept per engine, voice, sample rate and text
  (:func:`cache_key`): two voices saying the same words never share audio.
* **One per worker.** Like the models (``pipeline.models``), the cache is shared by every
  call of the process (:func:`worker_cache`); pipelines that ask for different bounds get
  the largest.
* **Bounded by bytes, least recently used first out.** A clause larger than the whole
  bound is not kept.
* **Filled off the loop.** Entries come from synthesis that already ran in the executor
  (a clause spoken whole is stored as it ends), or from :meth:`AudioCache.fill` at a
  node's set-up (``prefill``), which runs the synthesis off the loop and makes concurrent
  calls asking for the same text wait for the one synthesis instead of repeating it.

The cache is read on the loop and written from it; a lock keeps it consistent if another
thread (another loop) uses it too. Nothing here blocks for longer than a dict operation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .engine import TTSEngine

__all__ = ["AudioCache", "CacheKey", "CacheStats", "cache_key", "worker_cache"]

logger = logging.getLogger(__name__)

CacheKey = tuple[str, str, int, str]
"""(engine name, voice, sample rate, text)."""


def cache_key(engine: TTSEngine, voice: str, text: str) -> CacheKey:
    """The key of ``text`` said by ``engine`` with ``voice`` (whitespace-normalised text)."""
    return (engine.name, voice, engine.sample_rate, " ".join(text.split()))


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a cache's counters."""

    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


class AudioCache:
    """PCM audio by :data:`CacheKey`, least recently used out first, bounded by bytes."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"a TTS cache needs a positive bound, got {max_bytes} bytes")
        self._max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._pending: dict[CacheKey, asyncio.Future[bytes | None]] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def max_bytes(self) -> int:
        """The bound, in bytes of audio."""
        return self._max_bytes

    def grow(self, max_bytes: int) -> None:
        """Raise the bound to ``max_bytes`` if it is lower (never shrinks a shared cache)."""
        with self._lock:
            self._max_bytes = max(self._max_bytes, max_bytes)

    def get(self, key: CacheKey) -> bytes | None:
        """The audio of ``key``, or ``None``; a hit makes it the most recently used."""
        with self._lock:
            pcm = self._entries.get(key)
            if pcm is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return pcm

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def put(self, key: CacheKey, pcm: bytes) -> bool:
        """Keep ``pcm`` for ``key``, evicting the least recently used entries to fit.

        Returns False (and keeps nothing) when ``pcm`` alone is over the bound or empty.
        """
        size = len(pcm)
        with self._lock:
            if not size or size > self._max_bytes:
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._entries[key] = pcm
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)
                self.evictions += 1
            return True

    async def fill(self, key: CacheKey, synthesize: Callable[[], Awaitable[bytes]]) -> bytes | None:
        """The audio of ``key``: from the cache, else made once by ``synthesize()`` (which
        must do its work off the loop) and kept.

        Calls asking for a key already being made wait for that one synthesis. Returns
        ``None`` if it failed (logged; the text is then synthesised when it is spoken).
        """
        pcm = self.get(key)
        if pcm is not None:
            return pcm
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        result: bytes | None = None
        try:
            result = await synthesize()
            self.put(key, result)
        except Exception as exc:
            logger.warning("TTS cache: could not synthesise %r with %s: %s", key[3][:60], key[0], exc)
        finally:
            del self._pending[key]
            future.set_result(result)  # waiters get None on failure or cancellation
        return result

    def stats(self) -> CacheStats:
        """The counters now."""
        with self._lock:
            return CacheStats(entries=len(self._entries), bytes=self._bytes, max_bytes=self._max_bytes,
                              hits=self.hits, misses=self.misses, evictions=self.evictions)

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_worker: AudioCache | None = None
_worker_lock = threading.Lock()


def worker_cache(max_bytes: int) -> AudioCache:
    """The process-wide cache, made on first use; its bound grows to the largest asked for."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = AudioCache(max_bytes)
        else:
            _worker.grow(max_bytes)
        return _worker
