"""``voicegraph peer acs``: its flags, what it prints, and the app it serves."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
import uvicorn

from transports.acs.peer.rest import AcsRestPeer
from voicegraph.cli import main

KEY = base64.b64encode(bytes(range(32))).decode()


def test_it_prints_the_server_environment_and_serves_the_peer(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    served: dict[str, Any] = {}

    def run(app: Any, **options: Any) -> None:  # stands in for the blocking server
        served.update(app=app, **options)

    monkeypatch.setattr(uvicorn, "run", run)
    assert main(["peer", "acs", "--port", "8123", "--host", "127.0.0.2", "--key", KEY, "--resource-id", "res-1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:5] == ["export ACS_ENDPOINT=http://127.0.0.2:8123", f"export ACS_KEY={KEY}",
                        "export VOICEGRAPH_ACS_AUDIENCE=res-1",
                        "export VOICEGRAPH_ACS_OPENID_URL=http://127.0.0.2:8123/calling/.well-known/acsopenidconfiguration"]
    assert "curl -X POST http://127.0.0.2:8123/peer/ring" in "\n".join(out)
    assert (served["host"], served["port"]) == ("127.0.0.2", 8123)
    paths = {getattr(route, "path", "") for route in served["app"].routes}
    assert {"/calling/callConnections:answer", "/calling/keys", "/peer/ring", "/peer/subscribe"} <= paths


async def test_without_a_key_it_makes_one_that_signs(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app))
    assert main(["peer", "acs", "--port", "8123"]) == 0
    key = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("export ACS_KEY="))
    assert len(base64.b64decode(key.removeprefix("export ACS_KEY="), validate=True)) == 32
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served["app"]), base_url="http://peer") as http:
        assert (await http.get("/calling/keys")).json()["keys"][0]["alg"] == "RS256"


@pytest.mark.parametrize(("argv", "message"), [
    (["peer", "acs"], "the following arguments are required: --port"),
    (["peer", "acs", "--port", "0"], "argument --port: must be a TCP port 1..65535, got 0"),
    (["peer", "acs", "--port", "x"], "argument --port: expected a TCP port number, got 'x'"),
    (["peer", "acs", "--port", "1", "--key", "not base64!"], "argument --key: must be a base64 access key"),
    (["peer", "acs", "--port", "1", "--key", ""], "argument --key: must be a base64 access key"),
    (["peer", "acs", "--port", "1", "--resource-id", " "], "argument --resource-id: must be a resource id"),
    (["peer", "sip", "--port", "1"], "argument service: invalid choice: 'sip'"),
])
def test_bad_flags_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_key_is_refused_by_the_peer_too() -> None:
    with pytest.raises(ValueError, match="the access key must be base64"):
        AcsRestPeer("not base64!")
