"""Azure AI Speech recognition for one call: continuous recognition on the official SDK.

The SDK is push-based and native: audio goes in through a ``PushAudioInputStream`` at the
line's rate, results come back as events on the SDK's own threads. :class:`AzureRecognizer`
is the bridge:

- **Into the loop, never blocking it.** Each SDK callback copies what it needs from the
  result (text, offsets, confidence, cancellation details) on the SDK thread and hands it to
  the event loop with ``loop.call_soon_threadsafe``; no lock is ever held across the loop.
  Blocking SDK calls (``start_continuous_recognition_async().get()``, ``stop...``, the
  connection's ``open``) run in the default executor.
- **Results in call-audio time.** The SDK's offsets count from the start of the audio of
  the current recogniser; :class:`AzureResult` carries milliseconds from the first byte the
  call pushed, so a restarted recogniser (which starts from replayed audio) lines up.
- **Failures.** The SDK itself reconnects on a dropped connection and resends the audio the
  service has not acknowledged (seen against the peer: a close mid-utterance costs no
  words). What it gives up on arrives as ``canceled`` with an error: an authentication
  failure with a token source is answered by fetching a fresh token and restarting the
  recogniser, replaying the audio pushed since the last final (``max_restarts`` times);
  anything else is reported as a ``failed`` result, and the STT node falls back to its
  embedded engine for the rest of the call.
- **Tokens.** With Entra ID the recogniser is made with the token source's current token;
  when it expires the service refuses the SDK's next connection (401) and the restart above
  takes a fresh one (``EntraToken`` renews it five minutes before expiry). Setting
  ``authorization_token`` on a running recogniser was not picked up by the SDK's own
  reconnect against the peer (1.53), so the restart is the mechanism relied on.
- **Phrase lists per agent.** The SDK sends the phrase list in the ``speech.context`` that
  opens a connection's turn, and a continuous recognition keeps one turn, so a new list
  (:meth:`AzureRecognizer.set_phrases`, the STT node's answer to an ``AgentSwitch``) is
  applied by the same restart: stop, start a recogniser with the new list, replay the audio
  pushed since the last final. The node calls it between the caller's turns.
- **Reconnects need audio.** After a reconnect the SDK resumes the session only as new
  audio arrives; a phone line's 20 ms frames (silence included) keep it going.

Nothing here knows about turns: the node (``processors.stt.node``) maps phrases to the
caller's turns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import ServiceError
from processors.azure_speech.config import AzureSpeechSettings, speech_config

__all__ = ["MAX_REPLAY_MS", "AzureRecognizer", "AzureResult", "TokenSource", "warm_up"]

logger = logging.getLogger(__name__)

MAX_REPLAY_MS = 30_000
"""Replay kept at most: the service finalises a phrase after its segmentation silence (or
~20 s of continuous speech); a longer wait without a final is silence with no phrase."""

TokenSource = Callable[[], Awaitable[str]]
"""An async callable giving the current authorization token (``EntraToken.get``)."""

Kind = Literal["interim", "final", "failed"]


@dataclass(frozen=True, slots=True)
class AzureResult:
    """A result of the service in call-audio time.

    Attributes:
        kind: ``interim`` (recognizing), ``final`` (recognized) or ``failed`` (canceled with
            an error the recogniser could not recover from).
        text: Display text (``final``) or the hypothesis so far (``interim``); empty for a
            final with no match.
        start_ms: Start of the phrase, from the first byte the call pushed.
        end_ms: End of the phrase.
        confidence: The best alternative's confidence (``final`` with detailed output), else 0.
        error: What failed, with the SDK's error code (``failed``).
    """

    kind: Kind
    text: str = ""
    start_ms: int = 0
    end_ms: int = 0
    confidence: float = 0.0
    error: str = ""


def _confidence(raw_json: str) -> float:
    try:
        best = json.loads(raw_json)["NBest"][0]
        return float(best.get("Confidence", 0.0))
    except (ValueError, KeyError, IndexError, TypeError):
        return 0.0


class AzureRecognizer:
    """Continuous recognition of one call's audio (see module docstring).

    Args:
        speech: Where and how to connect.
        on_result: Called on the event loop for each result.
        sample_rate: The rate of the PCM16 mono audio pushed (8000, 16000...).
        segmentation_silence_ms: Silence that ends a phrase (the service's default is 500).
        phrases: A phrase list that biases recognition (names, policy words); sent in each
            turn's ``speech.context``; :meth:`set_phrases` changes it.
        token: Gives a fresh authorization token (Entra ID); ``None`` for key/host auth.
        max_restarts: Restarts on authentication failure before giving up.
    """

    def __init__(
        self,
        speech: AzureSpeechSettings,
        on_result: Callable[[AzureResult], None],
        *,
        sample_rate: int = 16000,
        segmentation_silence_ms: int = 500,
        phrases: Sequence[str] = (),
        token: TokenSource | None = None,
        max_restarts: int = 2,
    ) -> None:
        self.speech = speech
        self.sample_rate = sample_rate
        self._on_result = on_result
        self._segmentation_ms = segmentation_silence_ms
        self._phrases = tuple(phrases)
        self._token = token
        self._max_restarts = max_restarts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recognizer: Any = None
        self._push: Any = None
        self._generation = 0  # results of a replaced recogniser are ignored
        self._base_ms = 0  # call-audio time where the current recogniser's audio starts
        self._bytes_per_ms = sample_rate * 2 / 1000
        self._pushed_bytes = 0
        self._replay = bytearray()  # audio pushed since the last final
        self._replay_start_ms = 0.0
        self._restarting = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0  # on authentication failures
        self.phrase_restarts = 0  # to apply a new phrase list
        self.failed = False
        self.callback_threads: set[int] = set()  # threads SDK callbacks ran on (tests)

    @property
    def phrases(self) -> tuple[str, ...]:
        """The phrase list in use (or being applied)."""
        return self._phrases

    @property
    def pushed_ms(self) -> float:
        """Audio pushed so far, in milliseconds: the call-audio clock of the results."""
        return self._pushed_bytes / self._bytes_per_ms

    async def start(self) -> None:
        """Create the recogniser, open its connection and start recognising (off the loop).

        Raises:
            ServiceError: the SDK refused the settings or could not start.
        """
        self._loop = asyncio.get_running_loop()
        token = await self._token() if self._token is not None else None
        await self._loop.run_in_executor(None, self._open, token, b"", self._phrases)

    def set_phrases(self, phrases: Sequence[str]) -> bool:
        """Recognise with ``phrases`` from now on; False (and nothing done) if it is the list in use.

        A started recogniser is restarted with the new list in a task of its own (blocking SDK
        calls in the executor), replaying the audio pushed since the last final: no audio is
        lost, but a phrase in progress is heard again from its start, so call it between the
        caller's turns. A list changed while a restart runs is applied when it ends.
        """
        new = tuple(phrases)
        if new == self._phrases:
            return False
        self._phrases = new
        if self._loop is None or self.failed or self._closed or self._restarting:
            return True  # start() or the restart under way picks the list up
        logger.info("azure speech: new phrase list (%d phrases): restarting with %d ms of audio replayed",
                    len(new), len(self._replay) / self._bytes_per_ms)
        self._begin_restart("phrases")
        return True

    def push(self, pcm: bytes) -> None:
        """Send caller audio (PCM16 mono at ``sample_rate``); never blocks.

        ``PushAudioInputStream.write`` copies into the SDK's buffer and returns.
        """
        if self.failed:
            return
        if not self._restarting and self._push is not None:
            self._push.write(pcm)
        self._replay += pcm
        self._pushed_bytes += len(pcm)
        excess = len(self._replay) - int(MAX_REPLAY_MS * self._bytes_per_ms)
        if excess > 0:  # no final for that long (silence): the oldest audio is not worth keeping
            self._forget_until(self._replay_start_ms + excess / self._bytes_per_ms)

    async def close(self) -> None:
        """End the audio and stop recognising (off the loop); results stop."""
        self._closed = True
        while self._task is not None and not self._task.done():
            await self._task  # a restart (and one it chained for a newer phrase list)
        self._generation += 1
        held = [self._recognizer, self._push]
        self._recognizer = self._push = None
        if held[0] is not None:
            await asyncio.get_running_loop().run_in_executor(None, _stop, held)

    # --- SDK side (executor and SDK threads) ----------------------------------------------

    def _open(self, token: str | None, replay: bytes, phrases: tuple[str, ...]) -> None:
        """Build and start a recogniser; runs in the executor."""
        import azure.cognitiveservices.speech as speechsdk

        try:
            config = speech_config(self.speech, token=token)
            config.output_format = speechsdk.OutputFormat.Detailed
            config.set_property(speechsdk.PropertyId.Speech_SegmentationSilenceTimeoutMs, str(self._segmentation_ms))
            fmt = speechsdk.audio.AudioStreamFormat(samples_per_second=self.sample_rate, bits_per_sample=16, channels=1)
            push = speechsdk.audio.PushAudioInputStream(fmt)
            recognizer = speechsdk.SpeechRecognizer(config, audio_config=speechsdk.audio.AudioConfig(stream=push))
        except (ValueError, RuntimeError) as exc:
            raise ServiceError(f"azure speech: cannot create a recogniser for {self.speech.describe()}: {exc}") from exc
        generation = self._generation
        recognizer.recognizing.connect(lambda evt: self._from_sdk(generation, "interim", evt))
        recognizer.recognized.connect(lambda evt: self._from_sdk(generation, "final", evt))
        recognizer.canceled.connect(lambda evt: self._from_sdk(generation, "canceled", evt))
        if phrases:
            _add_phrases(recognizer, phrases)
        if replay:
            push.write(replay)
        try:
            recognizer.start_continuous_recognition_async().get()
        except RuntimeError as exc:
            raise ServiceError(f"azure speech: recognition did not start at {self.speech.describe()}: {exc}") from exc
        self._recognizer, self._push = recognizer, push

    def _from_sdk(self, generation: int, kind: str, evt: Any) -> None:
        """On an SDK thread: copy the event's fields, hand them to the loop."""
        self.callback_threads.add(threading.get_ident())
        if kind == "canceled":
            details = evt.cancellation_details
            reason, code = details.reason.name, details.code.name
            payload: tuple[Any, ...] = (reason, code, details.error_details or "")
        else:
            result = evt.result
            if kind == "final" and result.reason.name != "RecognizedSpeech":
                payload = ("", result.offset, result.duration, 0.0)  # NoMatch: a phrase with no words
            else:
                conf = _confidence(result.json) if kind == "final" else 0.0
                payload = (result.text, result.offset, result.duration, conf)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, generation, kind, payload)

    # --- loop side --------------------------------------------------------------------------

    def _deliver(self, generation: int, kind: str, payload: tuple[Any, ...]) -> None:
        if generation != self._generation or self.failed:
            return
        if kind == "canceled":
            self._canceled(*payload)
            return
        text, offset, duration, confidence = payload
        start = self._base_ms + offset // 10_000
        end = start + duration // 10_000
        if kind == "final":
            self._forget_until(end)
            self._on_result(AzureResult("final", text, start, end, confidence))
        else:
            self._on_result(AzureResult("interim", text, start, end))

    def _forget_until(self, end_ms: float) -> None:
        """Drop replay audio up to call-audio time ``end_ms`` (finalised by the service)."""
        cut = int((end_ms - self._replay_start_ms) * self._bytes_per_ms) & ~1
        if cut > 0:
            del self._replay[:cut]
            self._replay_start_ms += cut / self._bytes_per_ms

    def _canceled(self, reason: str, code: str, details: str) -> None:
        if reason != "Error":
            return  # EndOfStream / CancelledByUser: our own close
        if code == "AuthenticationFailure" and self._token is not None and self.restarts < self._max_restarts:
            logger.warning("azure speech: %s (%s): fresh token, restarting with %d ms of audio replayed",
                           code, details, len(self._replay) / self._bytes_per_ms)
            self._begin_restart("auth")
            return
        self._fail(f"{code}: {details}")

    def _fail(self, error: str) -> None:
        logger.error("azure speech recognition failed at %s: %s", self.speech.describe(), error)
        self.failed = True
        self._on_result(AzureResult("failed", error=error))

    def _begin_restart(self, why: Literal["auth", "phrases"]) -> None:
        # Owned by this recogniser: close() waits for it.
        self._restarting = True
        self._task = asyncio.get_running_loop().create_task(self._restart(why))

    async def _restart(self, why: Literal["auth", "phrases"]) -> None:
        if why == "auth":
            self.restarts += 1
        else:
            self.phrase_restarts += 1
        held = [self._recognizer, self._push]
        self._generation += 1
        self._recognizer = self._push = None
        loop = asyncio.get_running_loop()
        try:
            if held[0] is not None:
                await loop.run_in_executor(None, _stop, held)
            token = await self._token() if self._token is not None else None
            self._base_ms = round(self._replay_start_ms)
            replay, pushed, phrases = bytes(self._replay), self._pushed_bytes, self._phrases
            await loop.run_in_executor(None, self._open, token, replay, phrases)
            late = self._pushed_bytes - pushed  # pushed while the new recogniser started
            if late and self._push is not None:
                self._push.write(bytes(self._replay[-late:]))
        except Exception as exc:  # a failed restart is a failure of the recogniser, reported once
            self._fail(f"restart failed: {exc}")
            return
        finally:
            self._restarting = False
        if self._phrases != phrases and not self._closed:  # changed while this restart ran
            self._begin_restart("phrases")


def warm_up() -> None:
    """Load the SDK's native library and build one recogniser, then drop it (blocking: run it
    in an executor at a worker's start). The first recogniser of a process costs ~0.35 s
    (perf/azure_stt.py ``start_ms_first``); after this, a call's ``start()`` takes ~2 ms."""
    import azure.cognitiveservices.speech as speechsdk

    config = speechsdk.SpeechConfig(host="ws://127.0.0.1:9")  # never connected: not started
    fmt = speechsdk.audio.AudioStreamFormat(samples_per_second=16000, bits_per_sample=16, channels=1)
    stream = speechsdk.audio.PushAudioInputStream(fmt)
    recognizer = speechsdk.SpeechRecognizer(config, audio_config=speechsdk.audio.AudioConfig(stream=stream))
    del recognizer, stream


def _add_phrases(recognizer: Any, phrases: Sequence[str]) -> None:
    import azure.cognitiveservices.speech as speechsdk

    grammar = speechsdk.PhraseListGrammar.from_recognizer(recognizer)
    for phrase in phrases:
        grammar.addPhrase(phrase)


def _stop(held: list[Any]) -> None:
    """End the audio, stop the recogniser and release it; runs in the executor.

    ``held`` is emptied here so the last references die on this thread: releasing a
    recogniser joins the SDK's threads (tens of milliseconds), which must not happen on
    the loop (measured in perf/azure_stt.py).
    """
    recognizer, push = held
    held.clear()
    if push is not None:
        push.close()
    try:
        recognizer.stop_continuous_recognition_async().get()
    except RuntimeError as exc:  # stopping a recogniser whose connection is gone
        logger.debug("azure speech: stop: %s", exc)
