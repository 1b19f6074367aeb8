"""One Speech SDK synthesizer and the bridge from its threads to the caller.

The SDK raises a clause's events (``synthesizing`` with each audio chunk, then
``synthesis_completed`` or ``synthesis_canceled``) on its own threads. A
:class:`Synthesizer` hands them to a sink: a :class:`LoopSink` puts them on an
``asyncio.Queue`` with ``loop.call_soon_threadsafe`` (the streamed path: nothing waits on
the loop, no lock is held across it), a :class:`ThreadSink` on a queue a blocked thread
reads (the cache prefill). The pool that owns the synthesizers is
``processors.tts.azure_engine``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pipeline.errors import ServiceError

if TYPE_CHECKING:
    import azure.cognitiveservices.speech as speechsdk

__all__ = ["AzureTTSError", "LoopSink", "Silent", "Sink", "Synthesizer", "ThreadSink"]


class AzureTTSError(ServiceError):
    """Azure AI Speech did not say a clause; ``code`` is the SDK's cancellation error code."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class Silent(AzureTTSError):
    """The service sent nothing in time: the clause is still open and must be stopped."""


class Sink(Protocol):
    def put(self, item: bytes | BaseException | None) -> None: ...


class LoopSink:
    """Items from SDK threads into an ``asyncio.Queue`` on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

    def put(self, item: bytes | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class ThreadSink:
    """Items from SDK threads to a blocked thread (a cache prefill)."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[bytes | BaseException | None] = queue.SimpleQueue()

    def put(self, item: bytes | BaseException | None) -> None:
        self.queue.put(item)

    def next(self, timeout: float) -> bytes | BaseException | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return Silent(f"Azure TTS sent nothing for {timeout:g} s", "ServiceTimeout")


class Synthesizer:
    """One SDK synthesizer, its connection and the sink of the clause it is saying.

    The SDK raises the events of one clause at a time, in order, the last one being
    ``synthesis_completed`` or ``synthesis_canceled``; after it, ``done`` hands the
    synthesizer back to the pool, so a late event never reaches the next clause.
    """

    def __init__(self, config: speechsdk.SpeechConfig, release: Callable[[Synthesizer], None]) -> None:
        import azure.cognitiveservices.speech as speechsdk

        self._release = release
        self._sink: Sink | None = None
        self._reopening = False  # back to the pool once the new connection is up
        self._token = ""
        #: Stopped by the engine and not yet back in the pool (it counts as settling).
        self.stopping = False
        self._guard = threading.Lock()  # sink swaps vs SDK threads; never held across I/O or the loop
        self._connected = threading.Event()
        self.synthesizer = speechsdk.SpeechSynthesizer(speech_config=config, audio_config=None)
        self.connection = speechsdk.Connection.from_speech_synthesizer(self.synthesizer)
        self.synthesizer.synthesizing.connect(self._on_audio)
        self.synthesizer.synthesis_completed.connect(self._on_completed)
        self.synthesizer.synthesis_canceled.connect(self._on_canceled)
        self.connection.connected.connect(self._on_connected)

    def connect(self, timeout: float) -> bool:
        """Open the connection ahead and wait (blocking) until it is up.

        A clause started while an ``open`` is still under way would make the SDK open a
        second connection, so a new synthesizer joins the pool only once connected (or
        after ``timeout``: an unreachable service fails the first clause instead).
        """
        self.connection.open(True)
        return self._connected.wait(timeout)

    def authorize(self, token: str) -> None:
        """Use ``token`` (Entra ID, ``aad#...``) from the next connection on."""
        if token != self._token:
            self._token = token
            self.synthesizer.authorization_token = token

    def begin(self, sink: Sink, ssml: str) -> None:
        with self._guard:
            self._sink = sink
        self.synthesizer.speak_ssml_async(ssml)

    def stop(self, sink: Sink) -> bool:
        """Stop the clause ``sink`` listens to, if it is still being said (False: it ended
        already, and the synthesizer may be saying the next one); the pool gets the
        synthesizer back when the SDK confirms."""
        with self._guard:
            if self._sink is not sink:
                return False
            self.stopping = True
        self.synthesizer.stop_speaking_async()
        return True

    def _take_sink(self) -> Sink | None:
        with self._guard:
            sink, self._sink = self._sink, None
        return sink

    def _on_audio(self, event: speechsdk.SpeechSynthesisEventArgs) -> None:
        with self._guard:
            sink = self._sink
        data = event.result.audio_data
        if sink is not None and data:
            sink.put(bytes(data))

    def _on_connected(self, event: object) -> None:
        self._connected.set()
        with self._guard:
            reopening, self._reopening = self._reopening, False
        if reopening:
            self._release(self)

    def _on_completed(self, event: speechsdk.SpeechSynthesisEventArgs) -> None:
        sink = self._take_sink()
        self._release(self)  # first: the clause that reads the end next may want it back
        if sink is not None:
            sink.put(None)

    def _on_canceled(self, event: speechsdk.SpeechSynthesisEventArgs) -> None:
        import azure.cognitiveservices.speech as speechsdk

        details = event.result.cancellation_details
        sink = self._take_sink()
        if details.reason == speechsdk.CancellationReason.Error:
            code = details.error_code.name
            self._release(self)  # the next clause connects again (and fails fast if still down)
            if sink is not None:
                sink.put(AzureTTSError(f"Azure TTS failed ({code}): {details.error_details}", code))
            return
        if sink is not None:
            sink.put(None)
        # Stopped: the SDK closed the connection. Open the next one ahead for the next
        # clause, and hand the synthesizer back once it is up (see ``connect``).
        with self._guard:
            self._reopening = True
        self._connected.clear()
        self.connection.open(True)
