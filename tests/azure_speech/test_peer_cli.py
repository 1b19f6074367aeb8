"""``voicegraph peer speech``: flags, what it prints, and the app it serves (used through the SDK)."""

from __future__ import annotations

import asyncio
from typing import Any

import azure.cognitiveservices.speech as sdk
import pytest
import uvicorn

from tests.azure_speech.conftest import serve
from tests.processors.stt.speech import silence, utterance
from voicegraph.cli import main


async def test_peer_speech_prints_the_environment_and_recognises(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    assert main(["peer", "speech", "--port", "8125", "--key", "cli-key-0001", "--final-ms", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == ["export AZURE_SPEECH_HOST=ws://127.0.0.1:8125", "export AZURE_SPEECH_KEY=cli-key-0001"]
    assert (served["host"], served["port"]) == ("127.0.0.1", 8125)
    async with serve(served["app"]) as port:
        def once() -> str:
            config = sdk.SpeechConfig(host=f"ws://127.0.0.1:{port}", subscription="cli-key-0001")
            fmt = sdk.audio.AudioStreamFormat(samples_per_second=16000, bits_per_sample=16, channels=1)
            push = sdk.audio.PushAudioInputStream(fmt)
            push.write(utterance("yes please transfer me to an agent") + silence(700))
            push.close()
            rec = sdk.SpeechRecognizer(config, audio_config=sdk.audio.AudioConfig(stream=push))
            return str(rec.recognize_once_async().get().text)

        text = await asyncio.get_running_loop().run_in_executor(None, once)
    assert text == "Yes please transfer me to an agent."


@pytest.mark.parametrize(("argv", "message"), [
    (["peer", "speech"], "the following arguments are required: --port"),
    (["peer", "speech", "--port", "1", "--key", "short"], "argument --key: must be at least 8 characters"),
    (["peer", "speech", "--port", "1", "--final-ms", "-1"], "argument --final-ms: must be a number of milliseconds"),
    (["peer", "speech", "--port", "1", "--stt-engine", "vosk"], "argument --stt-engine: invalid choice: 'vosk'"),
])
def test_bad_flags_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
