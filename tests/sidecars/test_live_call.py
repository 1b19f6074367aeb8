"""A real call (the orchestrator's text pipeline) with its short-term memory in Redis: the
call goes on while Redis is down, and what it saved lands in Redis, in order, afterwards."""

from __future__ import annotations

import json
from pathlib import Path

from redis.asyncio import Redis

from agents.memory import StoreShortTerm, use_short_term
from processors.sidecars.live import live_state_from_env
from tests.agents.helpers import CLAIMS, text_call
from tests.sidecars.redis_server import RedisServer


async def test_a_call_goes_on_while_redis_is_down_and_its_state_lands_after(tmp_path: Path,
                                                                            redis_server: RedisServer) -> None:
    live = live_state_from_env({"REDIS_URL": redis_server.url, "VOICEGRAPH_WORKER": "w1"})
    await live.start()
    assert live.writer is not None
    redis_server.stop()
    CLAIMS.clear()
    use_short_term(StoreShortTerm(live))
    try:
        report = await text_call(tmp_path, ["It is P-100", "I had a crash on Main Street"])
    finally:
        use_short_term(None)
    assert report["errors"] == []
    assert [t["bot_text"] for t in report["turns"][1:]] == [
        "Thank you Jane Doe, you are verified. I can help you file a claim. Tell me what happened, policy P-100.",
        "Your claim number is CL-0001."]
    assert live.writer.down and live.writer.stats().pending >= 2 and live.writer.stats().lost == 0

    redis_server.start()
    assert await live.writer.flush(30)
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    (turns_key,) = await redis.keys("vg:call:*:turns")
    call = turns_key.removeprefix("vg:call:{").removesuffix("}:turns")
    saved = [json.loads(fields["turn"]) for _, fields in await redis.xrange(turns_key)]
    assert [(t["turn"], t["agent"], t["caller"]) for t in saved] == [
        (2, "fnol", "It is P-100"), (3, "fnol", "I had a crash on Main Street")]
    context = await redis.hgetall(f"vg:call:{{{call}}}:context")
    assert context["agent"] == "fnol" and json.loads(context["agents"]) == ["fnol"]
    assert json.loads((await redis.hgetall(f"vg:call:{{{call}}}:slots"))["policy_number"]) == "P-100"
    await redis.aclose()
    await live.aclose()
