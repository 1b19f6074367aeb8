"""Azure AI Speech neural voices, streamed as raw PCM at the line's rate.

The Speech SDK is native code with its own threads. A clause becomes one SSML document
(``processors.azure_speech.ssml``: the agent's voice, style, rate, pitch, ``xml:lang``,
the text escaped) sent by ``speak_ssml_async``; each audio chunk the service sends
raises the ``synthesizing`` event on an SDK thread, which hands it to the event loop
with ``loop.call_soon_threadsafe`` (no lock is ever held across the loop). So the first
audio of a sentence is pushed as soon as the service sends it, long before the whole
sentence is made, and no thread of the CPU executor waits on the network.

Connections are reused: synthesizers live in a per-worker pool (the engine is one per
worker, ``processors.tts.node.engine_for``), each with its WebSocket opened ahead
(``Connection.open``) and kept across turns and calls. A synthesizer serves one clause
at a time. Closing the stream early (a ``FlushStart`` closes it through
``Processor.interruptible``) calls ``stop_speaking_async``: the service stops at once
and no more audio of that clause reaches the call; the SDK drops that connection, so
the synthesizer opens a fresh one and goes back to the pool when the SDK reports the
clause cancelled.

Failures raise :class:`AzureTTSError` (a ``ServiceError``) naming the SDK's error code,
and the TTS node says the clause with its fallback engine (Piper), so the turn is not
lost. A failure that will repeat (bad credentials, an unreachable host, throttling; a
connection lost mid-clause, once audio came, is taken as a passing one) opens a breaker
for the worker: for ``retry_s`` every clause goes straight to the
fallback instead of paying a failed connection each. A voice the service does not
know is remembered and refused at once the same way.

A service that sends nothing for ``timeout_s`` fails the clause the same way (and is told
to stop), so no turn is stuck. With Entra ID the token is refreshed before it expires,
between clauses; the SDK presents it on its next connection.

``speak_ssml_async`` and ``stop_speaking_async`` return a future at once (measured on
SDK 1.53: 0.07 ms and 0.2 ms), so they are called on the loop; building a synthesizer
loads native state and runs in a thread. One synthesizer and its thread bridge are
``processors.tts.azure_synthesizer``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Literal

from pipeline.settings import Doc, Range
from processors.azure_speech.ssml import Voice, build_ssml

from .azure_synthesizer import AzureTTSError, LoopSink, Silent, Synthesizer, ThreadSink
from .engine import clean_text

if TYPE_CHECKING:
    import azure.cognitiveservices.speech as speechsdk

    from processors.azure_speech.config import EntraToken

__all__ = ["DEFAULT_VOICE", "AzureTTSEngine", "AzureTTSError", "AzureTTSSettings", "load_azure"]

logger = logging.getLogger(__name__)

LineRate = Literal[8000, 16000, 24000, 48000]


@dataclass(frozen=True, kw_only=True)
class AzureTTSSettings:
    """How the Azure engine speaks (the ``azure:`` block of a ``tts`` node).

    The voice itself is the node's ``voice`` setting (``en-US-JennyNeural``).
    """

    style: Annotated[str, Doc("speaking style of the voice (cheerful, customerservice; blank: none)")] = ""
    rate: Annotated[str, Doc("speaking rate: +10%, 1.2, x-slow..x-fast (blank: the voice's own)")] = ""
    pitch: Annotated[str, Doc("pitch: -5%, +2st, x-low..x-high (blank: the voice's own)")] = ""
    lang: Annotated[str, Doc("xml:lang of the SSML (blank: from the voice name)")] = ""
    sample_rate: Annotated[LineRate, Doc("raw PCM rate asked of the service: the line's rate (16000 for ACS)")] = 16000
    voices: Annotated[Mapping[str, str], Doc(
        "voice per agent (agent name -> voice) after an AgentSwitch to it; else the agent file's voice")] = field(
        default_factory=lambda: MappingProxyType({}))
    warm: Annotated[int, Range(ge=0, le=64), Doc(
        "synthesizers connected ahead per worker, so the first clause pays no connection set-up")] = 1
    timeout_s: Annotated[float, Range(gt=0), Doc(
        "longest wait for the service's next audio of a clause (the first included) before the clause "
        "goes to the fallback")] = 5.0
    retry_s: Annotated[float, Range(ge=0), Doc(
        "after a failure that will repeat (credentials, host, throttling), seconds spent on the fallback "
        "before Azure is tried again")] = 30.0

    def __post_init__(self) -> None:
        for name in ("", *self.voices.values()):  # a bad value is a ConfigError at load time, named
            Voice(name=name or DEFAULT_VOICE, lang=self.lang, style=self.style, rate=self.rate, pitch=self.pitch)

    def key(self) -> tuple[object, ...]:
        """What tells two engines apart: these settings (not the voices per agent: they are
        per call) and the service the environment names (``AZURE_SPEECH_*``)."""
        # The key only as a digest: this tuple names a shared engine and must not hold a secret.
        service = tuple(sorted((k, hashlib.sha256(v.encode()).hexdigest() if k.endswith("_KEY") else v)
                               for k, v in os.environ.items() if k.startswith("AZURE_SPEECH_")))
        return (self.style, self.rate, self.pitch, self.lang, self.sample_rate, self.warm, self.timeout_s, self.retry_s,
                service)


DEFAULT_VOICE = "en-US-JennyNeural"


def load_azure(voice: str, settings: AzureTTSSettings) -> AzureTTSEngine:
    """The engine for the TTS node: the voice and delivery of ``settings``, the service of
    the environment (``processors.azure_speech.config``: a host, a key and region, or
    Entra ID). Blocking (an Entra ID token is fetched here): call it off the loop.

    Raises:
        ConfigError: the voice settings or the environment are wrong (named).
    """
    from processors.azure_speech.config import AzureSpeechSettings, EntraToken, speech_config

    service = AzureSpeechSettings.from_env()
    token = EntraToken(service.resource_id) if service.auth == "entra" and service.resource_id else None
    spec = Voice(name=voice or DEFAULT_VOICE, lang=settings.lang, style=settings.style, rate=settings.rate,
                 pitch=settings.pitch)
    logger.info("Azure TTS: %s, voice %s, %d Hz", service.describe(), spec.name, settings.sample_rate)
    return AzureTTSEngine(lambda: speech_config(service, token=token.fetch() if token else None), spec, settings,
                          token=token)


_SETTLE_WAIT_S = 0.5
"""How long a clause waits for a synthesizer that is reconnecting after a stop before it
makes a new one (reconnecting takes one connection set-up: ms locally, ~100 ms to Azure)."""

_CONNECT_TIMEOUT_S = 2.0
"""How long a new synthesizer waits for its connection (milliseconds on a LAN, a few
hundred on a far region) before it is used anyway."""


#: Error codes that will repeat for every clause until something changes outside.
_BREAKING = frozenset({"AuthenticationFailure", "Forbidden", "TooManyRequests", "ConnectionFailure",
                       "ServiceTimeout", "ServiceUnavailable", "ServiceRedirectTemporary",
                       "ServiceRedirectPermanent"})

#: Of those, the ones a reachable service may give once (a dropped connection, a stall).
_TRANSIENT_AFTER_AUDIO = frozenset({"ConnectionFailure", "ServiceTimeout", "ServiceUnavailable"})


class AzureTTSEngine:
    """Azure AI Speech voices for the TTS node (see the module docstring).

    Args:
        config: Makes the SDK's ``SpeechConfig`` (``processors.azure_speech.config``);
            called once, off the loop.
        voice: The default voice.
        settings: Rate, pool and breaker settings.
    """

    name = "azure"

    def __init__(self, config: Callable[[], speechsdk.SpeechConfig], voice: Voice,
                 settings: AzureTTSSettings | None = None, *, token: EntraToken | None = None) -> None:
        import azure.cognitiveservices.speech as speechsdk

        self.settings = settings or AzureTTSSettings()
        self._token = token
        self.sample_rate: int = self.settings.sample_rate
        self.voice = voice
        self._config = config()
        self._config.set_speech_synthesis_output_format(
            getattr(speechsdk.SpeechSynthesisOutputFormat, _FORMATS[self.sample_rate]))
        self._idle: list[Synthesizer] = []
        self._settling = 0  # stopped synthesizers reconnecting, back to the pool soon
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[Synthesizer]]] = (
            collections.deque())
        self._idle_guard = threading.Lock()
        self._down_until = 0.0  # time.monotonic(): the breaker (worker-wide, so wall time)
        self._down_reason = ""
        self._bad_voices: dict[str, str] = {}
        #: Synthesizers made (each one connection at a time), and clauses said and stopped.
        self.created = 0
        self.clauses = 0
        self.stopped = 0
        for _ in range(self.settings.warm):
            self._put_idle(self._make(warm=True))

    def voice_named(self, name: str) -> Voice:
        """The default voice's delivery (style, rate, pitch, lang) with another voice name."""
        same_lang = name.split("-")[:2] == self.voice.name.split("-")[:2]
        return Voice(name=name, lang=self.voice.lang if same_lang else "", style=self.voice.style,
                     rate=self.voice.rate, pitch=self.voice.pitch)

    async def stream(self, text: str, voice: Voice | None = None) -> AsyncGenerator[bytes, None]:
        """Yield ``text``'s audio as the service sends it; closing the iterator stops synthesis.

        Raises:
            AzureTTSError: the service failed or refused (credentials, host, throttling,
                unknown voice), or the breaker is open after such a failure.
        """
        voice = voice or self.voice
        ssml = self._ssml(text, voice)
        if ssml is None:
            return
        synth = await self._acquire()
        if self._token is not None:  # Entra ID: a fresh token before it expires, never mid-clause
            synth.authorize(await self._token.get())
        sink = LoopSink(asyncio.get_running_loop())
        finished = heard = False
        try:
            synth.begin(sink, ssml)
            while (item := await self._next(sink, voice, heard)) is not None:
                if isinstance(item, BaseException):
                    finished = True
                    raise self._failed(item, voice, heard)
                heard = True
                yield item
            finished = True
        finally:
            if not finished:  # closed early (a flush), or the service went silent
                self.stopped += 1
                with self._idle_guard:
                    self._settling += 1
                if not synth.stop(sink):
                    with self._idle_guard:
                        self._settling -= 1

    async def _next(self, sink: LoopSink, voice: Voice, heard: bool) -> bytes | BaseException | None:
        """The clause's next item; a service silent for ``timeout_s`` fails it (no stuck turn)."""
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                return await sink.queue.get()
        except TimeoutError:
            silent = AzureTTSError(f"Azure TTS sent nothing for {self.settings.timeout_s:g} s", "ServiceTimeout")
            raise self._failed(silent, voice, heard) from None

    def synthesize(self, text: str) -> Generator[bytes, None, None]:
        """The blocking form (``TTSEngine``), for cache prefill off the loop: same audio."""
        ssml = self._ssml(text, self.voice)
        if ssml is None:
            return
        synth = self._take_idle()
        if synth is None:
            synth = self._make()
        if self._token is not None:
            synth.authorize(self._token.fetch())
        sink = ThreadSink()
        finished = heard = False
        try:
            synth.begin(sink, ssml)
            while (item := sink.next(self.settings.timeout_s)) is not None:
                if isinstance(item, BaseException):
                    finished = not isinstance(item, Silent)
                    raise self._failed(item, self.voice, heard)
                heard = True
                yield item
            finished = True
        finally:
            if not finished:
                synth.stop(sink)

    def close(self) -> None:
        """Close the pooled connections (the worker is stopping)."""
        with self._idle_guard:
            idle, self._idle = self._idle, []
        for synth in idle:
            with contextlib.suppress(Exception):
                synth.connection.close()

    # --- internals --------------------------------------------------------------------

    def _ssml(self, text: str, voice: Voice) -> str | None:
        """The clause's SSML, or None when nothing is left to say; refuses while broken."""
        now = time.monotonic()
        if now < self._down_until:
            raise AzureTTSError(f"Azure TTS is off for {self._down_until - now:.0f} s more after: {self._down_reason}",
                                "Breaker")
        if voice.name in self._bad_voices:
            raise AzureTTSError(f"Azure TTS voice {voice.name!r} was refused: {self._bad_voices[voice.name]}",
                                "BadRequest")
        text = clean_text(text)
        if not text:
            return None
        self.clauses += 1
        return build_ssml(text, voice)

    def _failed(self, error: BaseException, voice: Voice, heard: bool) -> BaseException:
        """Log ``error`` and arm the breaker (or remember the voice) when it will repeat.

        A connection lost after the clause's audio had begun (``heard``) proved the service
        reachable: the next clause tries it again; one that never got going opens the breaker.
        """
        code = getattr(error, "code", "")
        transient = heard and code in _TRANSIENT_AFTER_AUDIO
        if code in _BREAKING and not transient and self.settings.retry_s > 0:
            self._down_until = time.monotonic() + self.settings.retry_s
            self._down_reason = str(error)
            logger.error("%s; using the fallback for %.0f s", error, self.settings.retry_s)
        elif code == "BadRequest" and "voice" in str(error).lower():
            self._bad_voices[voice.name] = str(error)
            logger.error("%s; voice %r is not used again", error, voice.name)
        else:
            logger.error("%s", error)
        return error

    def _make(self, *, warm: bool = False) -> Synthesizer:
        """A new synthesizer (blocking: off the loop); ``warm``: connected ahead, else its
        first clause connects (one wait either way, and a failure is told by the clause)."""
        # The pool gets it back from the SDK thread that raises a clause's last event.
        synth = Synthesizer(self._config, self._released)
        if warm and not synth.connect(_CONNECT_TIMEOUT_S):
            logger.warning("Azure TTS: no connection after %.0f s; the first clause will tell why",
                           _CONNECT_TIMEOUT_S)
        self.created += 1
        return synth

    async def _acquire(self) -> Synthesizer:
        """An idle synthesizer; else one being reconnected after a stop (a clause right
        after a barge-in), if it is back within ``_SETTLE_WAIT_S``; else a new one."""
        loop = asyncio.get_running_loop()
        with self._idle_guard:
            if self._idle:
                return self._idle.pop()
            waiter: asyncio.Future[Synthesizer] | None = None
            if self._settling > len(self._waiters):
                waiter = loop.create_future()
                self._waiters.append((loop, waiter))
        if waiter is not None:
            try:
                return await asyncio.wait_for(asyncio.shield(waiter), _SETTLE_WAIT_S)
            except TimeoutError:
                with self._idle_guard:
                    if (loop, waiter) in self._waiters:
                        self._waiters.remove((loop, waiter))
                    elif waiter.done():  # handed over just as the wait ended
                        return waiter.result()
        return await asyncio.to_thread(self._make)

    def _take_idle(self) -> Synthesizer | None:
        with self._idle_guard:
            return self._idle.pop() if self._idle else None

    def _put_idle(self, synth: Synthesizer, *, settled: bool = False) -> None:
        """Back to the pool (from any thread), or straight to a clause waiting for one."""
        with self._idle_guard:
            if settled:
                self._settling = max(0, self._settling - 1)
            while self._waiters:
                loop, waiter = self._waiters.popleft()
                if not waiter.done():
                    with contextlib.suppress(RuntimeError):  # that loop closed
                        loop.call_soon_threadsafe(self._hand_over, waiter, synth)
                        return
            self._idle.append(synth)

    def _hand_over(self, waiter: asyncio.Future[Synthesizer], synth: Synthesizer) -> None:
        if waiter.done():  # the clause stopped waiting just now: keep it for the next one
            self._put_idle(synth)
        else:
            waiter.set_result(synth)

    def _released(self, synth: Synthesizer) -> None:
        """A synthesizer's clause ended (SDK thread): back to the pool."""
        self._put_idle(synth, settled=synth.stopping)
        synth.stopping = False


#: The SDK's raw PCM output format for each line rate.
_FORMATS = {8000: "Raw8Khz16BitMonoPcm", 16000: "Raw16Khz16BitMonoPcm", 24000: "Raw24Khz16BitMonoPcm",
            48000: "Raw48Khz16BitMonoPcm"}
