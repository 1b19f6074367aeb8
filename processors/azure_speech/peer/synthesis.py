"""The peer's text-to-speech service: ``/cognitiveservices/websocket/v1`` as Azure serves it
(and ``/tts/cognitiveservices/websocket/v1``, where the JavaScript SDK goes).

What an official Speech SDK sends on one connection (logged from the Python SDK 1.53,
checked against the JavaScript SDK's ``SynthesisAdapterBase``): ``speech.config`` once
(the client's system and OS), then per clause ``synthesis.context`` (JSON: the output
format, ``synthesis.audio.outputFormat`` such as ``raw-16khz-16bit-mono-pcm``, and which
metadata it wants) and ``ssml`` (``application/ssml+xml``), both with the clause's
``X-RequestId``; ``telemetry`` after each turn. The SDK keeps the connection across
clauses, and closes it to stop a clause (``stop_speaking``).

What the service answers, every message echoing the ``X-RequestId``: ``turn.start``
(``{"context": {"serviceTag"}}``), ``response`` (``{"audio": {"type", "streamId"}}``:
the JavaScript SDK only accepts audio whose ``X-StreamId`` matches it), binary ``audio``
messages (2-byte header length, headers, PCM; a ``riff-*`` format starts with a WAV
header), ``audio.metadata`` with ``SessionEnd`` when ``sessionEndEnabled``, ``turn.end``.
A document the service refuses (not SSML, an unknown voice, an output format it cannot
make) closes the connection with 1007 and a reason, which the SDKs report as
``BadRequest``; a malformed frame closes it with 1007 too.

The words are said by the embedded engine (Piper, or eSpeak NG for speed), off the loop,
resampled to the asked rate and sent in ``PeerSettings.chunk_ms`` pieces, after
``first_audio_ms``, at real time when ``pace``. A voice exists when it is named like
Azure's neural voices (``en-US-JennyNeural``: language, region, a name ending in
``Neural``); any other name is "unsupported", as the service answers for a voice it does
not have. The upgrade goes through ``SpeechPeer.admit`` (the key, injected 401 and 429);
the peer's mid-turn faults (``disconnect``, ``garbage``, ``expire``: the credential is
revoked, ``error``; after ``after_ms`` of a clause's audio) act as in recognition. What synthesis adds (its engine,
a test gate, what it said) is a :class:`SynthesisState`, one per peer
(:func:`synthesis_state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import struct
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from pipeline.errors import ProtocolError
from pipeline.offload import blocking_executor
from processors.azure_speech.ssml import SsmlError, parse_ssml

from .faults import act_out
from .wire import Message, binary_message, parse_binary, parse_text, text_message

if TYPE_CHECKING:
    from .app import Fault, SpeechPeer

__all__ = ["SYNTHESIS_PATHS", "SynthesisSettings", "SynthesisState", "serve", "synthesis_state"]

logger = logging.getLogger(__name__)

SYNTHESIS_PATHS = ("/cognitiveservices/websocket/v1", "/tts/cognitiveservices/websocket/v1")
"""Where the SDKs open synthesis given ``host=``: the Python (native) SDK uses the first,
the JavaScript SDK the second (its ``SpeechSynthesisConnectionFactory``)."""

_VOICE = re.compile(r"^[a-z]{2,3}-[A-Z]{2}(?:-[A-Za-z]+)?-[A-Za-z0-9]+Neural$")
_FORMAT = re.compile(r"^(raw|riff)-(8|16|24|48)khz-16bit-mono-pcm$")
_BAD_REQUEST = 1007  # what the service closes with for a request it refuses


@dataclass(slots=True)
class SynthesisSettings:
    """What synthesis adds to the peer's ``PeerSettings`` (whose ``first_audio_ms``,
    ``chunk_ms`` and ``pace`` it follows).

    Attributes:
        engine: The embedded engine that says the words (``espeak``: instant, for tests).
        pace_ms: Wait between audio messages when ``PeerSettings.pace`` is off: a voice
            streamed faster than real time (0: each clause in one burst).
    """

    engine: Literal["piper", "espeak"] = "piper"
    pace_ms: float = 0.0


@dataclass(slots=True)
class SynthesisState:
    """Synthesis settings, a test gate and what synthesis served; the peer's own
    ``counters`` hold its connections and turns, its ``faults`` what to inject.

    Attributes:
        hold_after_chunks: Send this many audio messages of each clause, then wait for
            ``release`` before the rest (a test then sees the first audio arrive before
            the clause is done, by order, not by timing).
    """

    peer: SpeechPeer
    settings: SynthesisSettings = field(default_factory=SynthesisSettings)
    hold_after_chunks: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: The credential each connection presented: ``key:<key>`` or ``token:<bearer token>``.
    credentials: list[str] = field(default_factory=list)
    completed: int = 0  # clauses whose turn.end was sent
    stopped: int = 0  # clauses the client closed the connection on before their end
    refused: int = 0  # connections closed with 1007 (a request the service refuses)
    chunks: int = 0  # audio messages sent
    audio_bytes: int = 0  # audio sent (WAV headers included)
    texts: list[str] = field(default_factory=list)  # what each clause said
    voices: list[str] = field(default_factory=list)  # the voice of each clause
    formats: list[str] = field(default_factory=list)  # the output format asked for each clause
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, predicate: Callable[[SynthesisState], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds (counters change under ``changed``)."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: predicate(self)), timeout)

    async def _bump(self) -> None:
        async with self.changed:
            self.changed.notify_all()
        await self.peer.notify()


_STATES: weakref.WeakKeyDictionary[SpeechPeer, SynthesisState] = weakref.WeakKeyDictionary()


def synthesis_state(peer: SpeechPeer) -> SynthesisState:
    """The synthesis settings and records of ``peer`` (made on first use)."""
    state = _STATES.get(peer)
    if state is None:
        # A proxy: the state must not keep its (weakly keyed) peer alive.
        state = _STATES[peer] = SynthesisState(weakref.proxy(peer))
    return state


async def serve(websocket: WebSocket, peer: SpeechPeer) -> None:
    """Serve one synthesis connection until the client closes it (see the module docstring).

    The upgrade goes through ``peer.admit`` (the key, injected 401/429) unless the app
    accepted the connection already.
    """
    state = synthesis_state(peer)
    if websocket.client_state is WebSocketState.CONNECTING and not await peer.admit(websocket, "synthesis"):
        return
    state.credentials.append(_credential(websocket))
    session = _Session(websocket, peer, state)
    try:
        await session.run()
    finally:
        await state._bump()


def _credential(websocket: WebSocket) -> str:
    key = websocket.headers.get("ocp-apim-subscription-key")
    if key:
        return f"key:{key}"
    bearer = websocket.headers.get("authorization", "")
    return f"token:{bearer.removeprefix('Bearer ').strip()}" if bearer else ""


class _Refused(Exception):
    """A request the service refuses: the connection closes with 1007 and this reason."""


class _Session:
    """One connection: reads the client's messages, says each clause in a task of its own."""

    def __init__(self, websocket: WebSocket, peer: SpeechPeer, state: SynthesisState) -> None:
        self.ws = websocket
        self.peer = peer
        self.state = state
        self.contexts: dict[str, dict[str, object]] = {}  # X-RequestId -> synthesis.context
        self.turn: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while True:
                raw = await self._receive()
                if raw is None:
                    return
                try:
                    await self._handle(parse_text(raw) if isinstance(raw, str) else parse_binary(raw))
                except (ProtocolError, _Refused) as exc:
                    self.state.refused += 1
                    self.peer.counters.closed_bad_input.append(str(exc))
                    logger.warning("speech peer: synthesis request refused: %s", exc)
                    await self._close(_BAD_REQUEST, str(exc))
                    await self.state._bump()
                    return
        finally:
            if self.turn is not None and not self.turn.done():
                self.turn.cancel()
                self.state.stopped += 1
                with contextlib.suppress(asyncio.CancelledError):
                    await self.turn

    async def _receive(self) -> str | bytes | None:
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text, data = message.get("text"), message.get("bytes")
        return text if text is not None else data

    async def _handle(self, message: Message) -> None:
        path = message.path.lower()
        if path == "synthesis.context":
            self.contexts[message.request_id or ""] = _json(message, "synthesis.context")
        elif path == "ssml":
            await self._start(message)
        elif path not in ("speech.config", "telemetry"):
            logger.info("speech peer: ignoring a %r message on the synthesis path", message.path)

    async def _start(self, message: Message) -> None:
        if not isinstance(message.body, str):
            raise _Refused("an ssml message must be text")
        request_id = message.request_id
        if not request_id:
            raise _Refused("an ssml message needs an X-RequestId")
        if self.turn is not None and not self.turn.done():
            raise _Refused("an ssml message arrived before the previous turn ended")
        context = self.contexts.pop(request_id, None) or {}
        rate, riff = _output_format(context)
        try:
            request = parse_ssml(message.body)
        except SsmlError as exc:
            raise _Refused(str(exc)) from None
        for voice in request.voices:
            if not _VOICE.match(voice):
                raise _Refused(f"Unsupported voice {voice}.")
        metadata = _dict(_dict(_dict(context.get("synthesis")).get("audio")).get("metadataOptions"))
        self.state.voices.append(request.voices[0])
        self.state.formats.append(_format_name(context))
        self.state.texts.append(request.text)
        fault = self.peer.take_fault("synthesis", ("disconnect", "garbage", "expire", "error"))
        self.turn = asyncio.create_task(self._say(request_id, request.text, rate, riff, fault,
                                                  session_end=bool(metadata.get("sessionEndEnabled"))))
        self.turn.add_done_callback(_log_failure)

    async def _say(self, request_id: str, text: str, rate: int, riff: bool, fault: Fault | None, *,
                   session_end: bool) -> None:
        state, settings, peer_settings = self.state, self.state.settings, self.peer.settings
        tag = uuid.uuid4().hex
        stream_id = uuid.uuid4().hex.upper()
        await self._send(text_message("turn.start", json.dumps({"context": {"serviceTag": tag}}),
                                      request_id=request_id))
        self.peer.counters.turns["synthesis"] += 1
        await state._bump()
        response = {"context": {"serviceTag": tag}, "audio": {"type": "inline", "streamId": stream_id}}
        await self._send(text_message("response", json.dumps(response), request_id=request_id))
        try:
            pcm = await blocking_executor().run(("speech-peer", request_id), _render, settings.engine, text, rate)
        except Exception as exc:
            logger.error("speech peer: %s could not say %r: %s", settings.engine, text[:60], exc)
            await self._close(1011, f"synthesis failed: {exc}")
            return
        if peer_settings.first_audio_ms:
            await asyncio.sleep(peer_settings.first_audio_ms / 1000)
        chunk_ms = peer_settings.chunk_ms
        step = max(2, rate * 2 * chunk_ms // 1000)
        pieces = [pcm[i:i + step] for i in range(0, len(pcm), step)]
        if riff and pieces:
            pieces[0] = _wav_header(rate, len(pcm)) + pieces[0]
        gap_ms = chunk_ms if peer_settings.pace else settings.pace_ms
        for sent, piece in enumerate(pieces):
            if fault is not None and sent * chunk_ms >= fault.after_ms:
                await self._fault(fault, sent * chunk_ms)
                return
            if sent == state.hold_after_chunks:
                await state.release.wait()
            if sent and gap_ms:
                await asyncio.sleep(gap_ms / 1000)
            await self._send(binary_message("audio", piece, request_id=request_id, headers={"X-StreamId": stream_id}))
            state.chunks += 1
            state.audio_bytes += len(piece)
            await state._bump()
        if session_end:
            ticks = len(pcm) // 2 * 10_000_000 // rate  # the audio's length in 100 ns units
            await self._send(text_message("audio.metadata", json.dumps(
                {"Metadata": [{"Type": "SessionEnd", "Data": {"Offset": ticks}}]}), request_id=request_id))
        await self._send(text_message("turn.end", "{}", request_id=request_id))
        state.completed += 1
        await state._bump()

    async def _fault(self, fault: Fault, audio_ms: int) -> None:
        """Act out an injected mid-turn fault (as the peer's recognition does)."""
        logger.info("speech peer: injecting '%s' after %d ms of synthesis audio", fault.kind, audio_ms)
        closing = await act_out(fault, self.ws, self.peer)
        if closing is not None:
            await self._close(*closing)

    async def _send(self, frame: str | bytes) -> None:
        if isinstance(frame, str):
            await self.ws.send_text(frame)
        else:
            await self.ws.send_bytes(frame)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self.ws.close(code, reason[:120])  # a close reason must fit in 123 bytes


def _format_name(context: dict[str, object]) -> str:
    return str(_dict(_dict(context.get("synthesis")).get("audio")).get("outputFormat") or "raw-16khz-16bit-mono-pcm")


def _output_format(context: dict[str, object]) -> tuple[int, bool]:
    """(rate, riff) of the format ``synthesis.context`` asks for (raw 16 kHz when none)."""
    name = _format_name(context)
    match = _FORMAT.match(name)
    if match is None:
        raise _Refused(f"Unsupported output format {name}: the peer makes 16-bit mono PCM (raw or riff)")
    return int(match.group(2)) * 1000, match.group(1) == "riff"


def _json(message: Message, what: str) -> dict[str, object]:
    try:
        body = json.loads(message.body)
    except (ValueError, TypeError):
        raise _Refused(f"{what} is not JSON") from None
    if not isinstance(body, dict):
        raise _Refused(f"{what} is not a JSON object")
    return body


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _render(engine: Literal["piper", "espeak"], text: str, rate: int) -> bytes:
    """``text`` said by the embedded ``engine``, as PCM16 at ``rate`` (blocking)."""
    import numpy as np
    import soxr

    from processors.tts.node import engine_for

    voice = engine_for(engine)
    pcm = b"".join(voice.synthesize(text))
    if voice.sample_rate == rate or not pcm:
        return pcm
    samples = soxr.resample(np.frombuffer(pcm, dtype=np.int16), voice.sample_rate, rate)
    return bytes(samples.astype(np.int16).tobytes())


def _wav_header(rate: int, data_bytes: int) -> bytes:
    """The 44-byte RIFF/WAVE header of PCM16 mono at ``rate``."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
            rate * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes))


def _log_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled() or (exc := task.exception()) is None:
        return
    if isinstance(exc, (WebSocketDisconnect, OSError)):  # the client left mid-turn: its right
        logger.info("speech peer: the client left during a synthesis turn (%r)", exc)
    else:
        logger.error("speech peer: a synthesis turn failed: %r", exc)
