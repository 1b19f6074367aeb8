"""``voicegraph peer openai`` (flags, what it prints, the app it serves) and ``voicegraph
validate`` on models files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn

from tests.processors.llm.conftest import serve
from voicegraph.cli import main

ROOT = Path(__file__).resolve().parents[3]


async def test_peer_openai_prints_the_environment_and_serves_the_script(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    script = tmp_path / "peer.yaml"
    script.write_text('rules:\n  - match: "\\\\bhours\\\\b"\n    reply: "Eight to eight."\n')
    assert main(["peer", "openai", "--port", "8124", "--script", str(script), "--api-key", "sk-1",
                 "--tokens-per-s", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == ["export OPENAI_BASE_URL=http://127.0.0.1:8124/v1", "export OPENAI_API_KEY=sk-1"]
    assert (served["host"], served["port"]) == ("127.0.0.1", 8124)
    async with serve(served["app"]) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-1", max_retries=0)
        answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hours?"}])
        assert answer.choices[0].message.content == "Eight to eight."
        await client.close()


@pytest.mark.parametrize(("argv", "message"), [
    (["peer", "openai"], "the following arguments are required: --port"),
    (["peer", "openai", "--port", "1", "--ttft-ms", "-5"], "argument --ttft-ms: must be a number of milliseconds"),
    (["peer", "openai", "--port", "1", "--tokens-per-s", "nan"], "argument --tokens-per-s: must be a rate"),
])
def test_bad_flags_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_script_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "peer.yaml"
    bad.write_text("rules:\n  - reply: no pattern\n")
    assert main(["peer", "openai", "--port", "1", "--script", str(bad)]) == 2
    assert f"error: {bad}:2: rules[0]: needs exactly one of 'match' or 'after_tool'" in capsys.readouterr().err


def test_validate_checks_models_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "config" / "models.yaml")]) == 0
    assert "(3 routes, 4 deployments, 3 rules)" in capsys.readouterr().out
    bad = tmp_path / "models.yaml"
    bad.write_text("deployments:\n  x: {kind: openai, model: m}\nroutes:\n  fast: [y]\n")
    assert main(["validate", str(bad)]) == 1
    assert f"error: {bad}:4: routes.fast: unknown deployment 'y'" in capsys.readouterr().err
