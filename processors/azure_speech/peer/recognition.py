"""Recognition on one WebSocket connection, as the Speech service answers the SDK.

The client sends ``speech.config`` (once), then per turn ``speech.context`` (its
``X-RequestId`` names the turn) and ``audio`` messages: the first one starts with a
RIFF/WAVE header giving the format, an empty one ends the turn's audio. For each turn the
peer answers, echoing ``X-RequestId``::

    turn.start  speech.startDetected  (speech.hypothesis* speech.phrase)*  speech.endDetected  turn.end

A phrase ends after ``segmentation_silence_ms`` of silence (the client's
``Speech_SegmentationSilenceTimeoutMs``, sent in ``speech.context``, wins over the peer's
default). The phrase list the client sent is recorded (``SpeechPeer.contexts``, with the
connection's number and how many phrases the peer had recognised before), not used. The SDK
sends ``speech.context`` again for a new turn on the same connection: after its end of
audio, a continuous recognition opens one more turn until it is stopped.
Offsets and durations are in 100 ns ticks from the start of the turn's audio.
``?format=detailed`` gets ``NBest`` entries with a confidence, otherwise ``DisplayText``.

Silence is told from speech by level (20 ms frames under -45 dBFS are silence): the peer
stands in for the service's segmentation, it does not try to equal it. The words come from
the embedded engine (``PeerSettings.stt_engine``), fed in 100 ms batches in the default
executor so the loop never waits on a decode.

A message that is not USP (no headers, bad binary framing, audio that is not 16-bit mono
PCM) closes the connection with 1007 and a reason naming what was wrong; other
connections are untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import struct
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from pipeline.errors import ProtocolError
from processors.stt.engine import Hypothesis, RecognizerStream
from processors.stt.node import stt_engine_for

from .faults import act_out
from .wire import Message, parse_binary, parse_text, text_message

if TYPE_CHECKING:
    from .app import Fault, SpeechPeer

__all__ = ["forms", "serve"]

logger = logging.getLogger(__name__)

FRAME_MS = 20
SILENCE_DBFS = -45.0
PREROLL_MS = 200  # audio kept ahead of the first voiced frame: word onsets are quiet
FEED_MS = 100
TICKS_PER_MS = 10_000


async def serve(websocket: WebSocket, peer: SpeechPeer) -> None:
    """Serve one accepted recognition connection until the client closes it."""
    conn = _Connection(websocket, peer)
    try:
        await conn.run()
    except WebSocketDisconnect:
        pass
    except ProtocolError as exc:
        logger.warning("speech peer: closing a recognition connection: %s", exc)
        peer.counters.closed_bad_input.append(str(exc))
        await websocket.close(code=1007, reason=str(exc)[:120])
    finally:
        await conn.release()
        await peer.notify()


def _wav_format(data: bytes) -> tuple[int, bytes]:
    """The sample rate of a RIFF/WAVE header, and the audio after it."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ProtocolError("first audio message of a turn has no RIFF/WAVE header")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, pos + 8)
            if fmt != 1 or channels != 1 or bits != 16:
                raise ProtocolError(f"audio must be 16-bit mono PCM, got format {fmt}, {channels} ch, {bits} bit")
        elif chunk == b"data":
            if not rate:
                raise ProtocolError("WAVE header has a data chunk before its fmt chunk")
            return rate, data[pos + 8 :]
        pos += 8 + size
    raise ProtocolError("WAVE header has no data chunk")


def forms(text: str) -> tuple[str, str]:
    """The service's two forms of an engine's text: lexical (lower case, no punctuation:
    ``i want to file a claim``) and display (capitalised, ending in punctuation:
    ``I want to file a claim.``). Whisper punctuates, pocketsphinx does not."""
    words = text.split()
    lexical = " ".join(w for w in (word.strip(".,!?;:\"").lower() for word in words) if w)
    if not lexical:
        return "", ""
    display = " ".join(words)
    display = display[0].upper() + display[1:]
    return lexical, display if display[-1] in ".!?" else display + "."


def _dbfs(frame: bytes) -> float:
    samples = np.frombuffer(frame, dtype=np.int16).astype(np.float64)
    rms = math.sqrt(float(np.mean(samples * samples))) if len(samples) else 0.0
    return 20 * math.log10(rms / 32768) if rms > 0 else -120.0


def _segmentation_ms(context: Any, default: int) -> int:
    """The client's segmentation silence timeout from ``speech.context``, if it sent one.

    The Python SDK 1.53 sends ``{"phraseDetection": {"mode": "CONVERSATION", "CONVERSATION":
    {"segmentation": {"segmentationSilenceTimeoutMs": 700, "mode": "Custom"}}}}``: the block
    is named by the mode; any case is accepted.
    """
    detection = context.get("phraseDetection") if isinstance(context, dict) else None
    if not isinstance(detection, dict):
        return default
    for key, block in detection.items():
        if key.lower() in ("interactive", "conversation", "dictation") and isinstance(block, dict):
            segmentation = block.get("segmentation")
            value = segmentation.get("segmentationSilenceTimeoutMs") if isinstance(segmentation, dict) else None
            if isinstance(value, int) and 100 <= value <= 5000:
                return value
    return default


def _phrases(context: Any) -> list[str]:
    """The phrase list (``dgi.Groups[].Items[].Text``) the client sent in ``speech.context``."""
    groups = context.get("dgi", {}).get("Groups", []) if isinstance(context, dict) else []
    return [item["Text"] for group in groups if isinstance(group, dict)
            for item in group.get("Items", []) if isinstance(item, dict) and isinstance(item.get("Text"), str)]


class _Connection:
    def __init__(self, websocket: WebSocket, peer: SpeechPeer) -> None:
        self.ws = websocket
        self.peer = peer
        self.detailed = websocket.query_params.get("format") == "detailed"
        self.stream: RecognizerStream | None = None
        self.loop = asyncio.get_running_loop()
        self.request_id: str | None = None
        self.number = peer.counters.connections["recognition"]  # admitted: counted already
        self._new_turn_state()

    def _new_turn_state(self) -> None:
        self.rate = 0
        self.audio_ms = 0
        self.carry = b""
        self.preroll: list[bytes] = []
        self.in_phrase = False
        self.spoke = False
        self.phrase_start_ms = 0
        self.silence_ms = 0
        self.batch = bytearray()
        self.hypothesis = ""
        self.first_hypothesis = True
        self.segmentation_ms = self.peer.settings.segmentation_silence_ms
        self.fault: Fault | None = None

    async def run(self) -> None:
        while True:
            event = await self.ws.receive()
            if event["type"] == "websocket.disconnect":
                return
            if event.get("text") is not None:
                await self._on(parse_text(event["text"]))
            elif event.get("bytes") is not None:
                await self._on(parse_binary(event["bytes"]))

    async def release(self) -> None:
        stream, self.stream = self.stream, None
        close = getattr(stream, "close", None)
        if close is not None:
            await self.loop.run_in_executor(None, close)

    async def _send(self, path: str, body: dict[str, Any]) -> None:
        await self.ws.send_text(text_message(path, json.dumps(body), request_id=self.request_id))

    async def _on(self, message: Message) -> None:
        if message.path == "speech.context":
            await self._start_turn(message)
        elif message.path == "audio":
            if message.request_id is None or message.request_id != self.request_id:
                raise ProtocolError(f"audio for request {message.request_id!r} outside its turn")
            assert isinstance(message.body, bytes)
            await self._audio(message.body)
        # speech.config, telemetry and other client messages need no answer

    async def _start_turn(self, message: Message) -> None:
        if not message.request_id:
            raise ProtocolError("speech.context has no X-RequestId")
        try:
            context = json.loads(message.body)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"speech.context body is not JSON: {exc.msg}") from None
        if self.stream is None:
            engine = await self.loop.run_in_executor(None, stt_engine_for, self.peer.settings.stt_engine)
            self.stream = await self.loop.run_in_executor(None, engine.open_stream)
        self.request_id = message.request_id
        self._new_turn_state()
        self.segmentation_ms = _segmentation_ms(context, self.segmentation_ms)
        # connection / phrases_before: which connection, and what the peer had recognised
        # when this turn began (tests tell a restarted recogniser's turns from the one before).
        self.peer.contexts.append({"segmentation_ms": self.segmentation_ms, "phrases": _phrases(context),
                                   "connection": self.number, "phrases_before": len(self.peer.phrases)})
        self.fault = self.peer.take_fault("recognition", ("disconnect", "garbage", "expire", "error"))
        self.peer.counters.turns["recognition"] += 1
        await self._send("turn.start", {"context": {"serviceTag": self.request_id}})

    async def _audio(self, data: bytes) -> None:
        if not data:
            await self._end_turn()
            return
        if not self.rate:
            self.rate, data = _wav_format(data)
        if len(data) % 2:
            raise ProtocolError(f"audio message of {len(data)} bytes is not whole 16-bit samples")
        frame_bytes = self.rate * 2 * FRAME_MS // 1000
        data = self.carry + data
        whole = len(data) - len(data) % frame_bytes
        self.carry = data[whole:]
        for pos in range(0, whole, frame_bytes):
            await self._frame(data[pos : pos + frame_bytes])
            if self.fault is not None and self.audio_ms >= self.fault.after_ms:
                await self._fault(self.fault)
                return
        if self.in_phrase and len(self.batch) >= FEED_MS * self.rate * 2 // 1000:
            await self._feed()

    async def _frame(self, frame: bytes) -> None:
        voiced = _dbfs(frame) > SILENCE_DBFS
        self.audio_ms += FRAME_MS
        if not self.in_phrase:
            self.preroll.append(frame)
            del self.preroll[: -PREROLL_MS // FRAME_MS]
            if voiced:
                self.in_phrase, self.silence_ms, self.first_hypothesis = True, 0, True
                self.phrase_start_ms = self.audio_ms - FRAME_MS * len(self.preroll)
                self.batch = bytearray(b"".join(self.preroll))
                self.preroll = []
                if not self.spoke:
                    self.spoke = True
                    await self._send("speech.startDetected", {"Offset": self.phrase_start_ms * TICKS_PER_MS})
            return
        self.batch += frame
        self.silence_ms = 0 if voiced else self.silence_ms + FRAME_MS
        if self.silence_ms >= self.segmentation_ms:
            await self._end_phrase()

    async def _feed(self) -> None:
        chunk, self.batch = bytes(self.batch), bytearray()
        assert self.stream is not None
        hyp = await self.loop.run_in_executor(None, self.stream.feed, chunk)
        text = forms(hyp.text)[0] if hyp is not None else ""  # hypotheses are lexical, as the service's
        if text and text != self.hypothesis:
            if self.first_hypothesis and self.peer.settings.first_hypothesis_ms:
                await asyncio.sleep(self.peer.settings.first_hypothesis_ms / 1000)
            self.first_hypothesis = False
            self.hypothesis = text
            await self._send("speech.hypothesis", {
                "Text": text, "Offset": self.phrase_start_ms * TICKS_PER_MS,
                "Duration": (self.audio_ms - self.phrase_start_ms) * TICKS_PER_MS,
            })

    async def _end_phrase(self) -> None:
        if self.batch:
            await self._feed()
        assert self.stream is not None
        hyp: Hypothesis = await self.loop.run_in_executor(None, self.stream.finish)
        self.in_phrase, self.hypothesis = False, ""
        if self.peer.settings.final_ms:
            await asyncio.sleep(self.peer.settings.final_ms / 1000)
        lexical, display = forms(hyp.text)
        offset = self.phrase_start_ms * TICKS_PER_MS
        duration = (self.audio_ms - self.silence_ms - self.phrase_start_ms) * TICKS_PER_MS
        if not lexical:
            await self._send("speech.phrase", {"RecognitionStatus": "NoMatch", "Offset": offset, "Duration": duration})
            return
        self.peer.phrases.append(display)
        body: dict[str, Any] = {"RecognitionStatus": "Success", "Offset": offset, "Duration": duration}
        if self.detailed:
            confidence = round(max(0.0, min(1.0, hyp.confidence)), 4) or 0.9
            body["DisplayText"] = display
            body["NBest"] = [{"Confidence": confidence, "Lexical": lexical, "ITN": lexical,
                              "MaskedITN": lexical, "Display": display}]
        else:
            body["DisplayText"] = display
        await self._send("speech.phrase", body)
        await self.peer.notify()

    async def _end_turn(self) -> None:
        if self.in_phrase:
            await self._end_phrase()
        await self._send("speech.endDetected", {"Offset": self.audio_ms * TICKS_PER_MS})
        await self._send("turn.end", {})
        self.request_id = None
        await self.peer.notify()

    async def _fault(self, fault: Fault) -> None:
        """Act out an injected mid-turn fault; the connection ends."""
        logger.info("speech peer: injecting '%s' after %d ms of audio", fault.kind, self.audio_ms)
        self.fault = None
        closing = await act_out(fault, self.ws, self.peer)
        if closing is None:
            return
        code, reason = closing
        await self.ws.close(code=code, reason=reason)
        raise WebSocketDisconnect(code)

