"""The domain tools over the shipped data files, with records written to a temp state dir."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from agents.tools.domain import (
    DOMAIN_TOOLS,
    ClaimsStore,
    Domain,
    book_appointment,
    check_conflicts,
    file_claim,
    hang_up,
    lookup_policy,
    search_kb,
    transfer_to_human,
    triage,
    use_domain,
    verify_caller,
)

TODAY = date(2026, 11, 26)  # a Thursday


@pytest.fixture
def domain(tmp_path: Path) -> Iterator[Domain]:
    made = Domain(state_dir=tmp_path, today=lambda: TODAY)
    previous = use_domain(made)
    yield made
    use_domain(previous)


def test_the_tools_are_typed_documented_async_functions() -> None:
    import inspect
    import typing
    assert [fn.__name__ for fn in DOMAIN_TOOLS] == [
        "verify_caller", "lookup_policy", "file_claim", "book_appointment", "triage", "check_conflicts",
        "search_kb", "transfer_to_human", "hang_up"]
    for fn in DOMAIN_TOOLS:
        assert inspect.iscoroutinefunction(fn)
        hints = typing.get_type_hints(fn)
        assert set(hints) == {*inspect.signature(fn).parameters, "return"}, fn.__name__
        assert (fn.__doc__ or "").strip().split("\n")[0], fn.__name__


@pytest.mark.parametrize(("name", "dob", "number", "verified"), [
    ("Jane Doe", "1980-03-03", "POL-12345", True),
    ("jane  doe", "March 3, 1980", "p o l 1 2 3 4 5", True),  # as a model or a caller may give them
    ("Jane Doe", "1980-03-03", "MEM-24680", True),  # the member number works too
    ("Jane Doe", "1980-03-03", "PAUL-12345", True),  # a misheard prefix: the digits decide
    ("Jane Doe", "1980-03-03", "", False),
    ("Jane Doe", "1980-03-04", "POL-12345", False),
    ("Jane Dough", "1980-03-03", "POL-12345", False),
    ("Jane Doe", "1980-03-03", "POL-67890", False),  # someone else's policy
    ("Jane Doe", "not a date", "POL-12345", False),
])
async def test_verify_caller(domain: Domain, name: str, dob: str, number: str, verified: bool) -> None:
    result = await verify_caller(name, dob, number)
    assert result["verified"] is verified
    if verified:
        assert result["caller"]["id"] == "CUST-1001"
    else:
        assert result == {"verified": False, "reason": "the details do not match our records"}


async def test_lookup_policy(domain: Domain) -> None:
    found = await lookup_policy("pol 12345")
    assert found["found"] is True and found["policy_number"] == "POL-12345"
    assert found["status"] == "active" and found["vehicle"] == "2019 Toyota Corolla" and found["deductible"] == 500
    assert await lookup_policy("POL-00000") == {"found": False, "policy_number": "POL-00000"}


async def test_file_claim_stores_exactly_the_values_and_numbers_claims_in_order(domain: Domain) -> None:
    first = await file_claim("POL-12345", "2026-11-25", "Main St", "Rear-ended at a light", True, "Corolla")
    second = await file_claim("POL-67890", "November 20, 2026", "Elm St", "Hail", False, "Civic")
    assert first == {"filed": True, "claim_number": "CLM-100001", "status": "open"}
    assert second["claim_number"] == "CLM-100002"
    lines = [json.loads(line) for line in (domain.claims.path).read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "filed_at"} for r in lines] == [
        {"claim_number": "CLM-100001", "policy_number": "POL-12345", "incident_date": "2026-11-25",
         "location": "Main St", "description": "Rear-ended at a light", "injuries": True, "vehicle": "Corolla"},
        {"claim_number": "CLM-100002", "policy_number": "POL-67890", "incident_date": "2026-11-20",
         "location": "Elm St", "description": "Hail", "injuries": False, "vehicle": "Civic"}]
    assert await domain.claims.get("CLM-100002") == lines[1]
    assert await domain.claims.get("CLM-999999") is None


async def test_concurrent_claims_get_distinct_numbers(tmp_path: Path) -> None:
    store = ClaimsStore(tmp_path / "c.jsonl")
    records = await asyncio.gather(*(store.add({"n": i}) for i in range(10)))
    assert sorted(r["claim_number"] for r in records) == [f"CLM-{100001 + i}" for i in range(10)]
    assert len(await store.read()) == 10


async def test_file_claim_refuses_a_lapsed_policy_or_a_future_date(domain: Domain) -> None:
    assert await file_claim("POL-24680", "2026-11-25", "x", "y", False, "z") == {
        "filed": False, "reason": "no active policy POL-24680"}
    assert await file_claim("POL-12345", "2026-12-25", "x", "y", False, "z") == {
        "filed": False, "reason": "the incident date '2026-12-25' is not a past date"}
    assert not domain.claims.path.exists()


async def test_book_appointment(domain: Domain) -> None:
    first = await book_appointment("Jane Doe", "2026-12-01", "cough")
    second = await book_appointment("John Smith", "December 1, 2026", "checkup")
    assert first == {"booked": True, "date": "2026-12-01", "time": "09:00", "patient_name": "Jane Doe",
                     "reason": "cough", "confirmation": "APT-5001"}
    assert (second["time"], second["confirmation"]) == ("09:30", "APT-5002")
    assert await book_appointment("Jane Doe", "Saturday", "x") == {
        "booked": False, "reason": "the clinic is closed that day", "next_available": "2026-11-30"}
    assert await book_appointment("Jane Doe", "2026-12-25", "x") == {
        "booked": False, "reason": "the clinic is closed that day", "next_available": "2026-12-28"}
    assert (await book_appointment("Jane Doe", "2026-11-01", "x"))["reason"] == "that date has passed"
    assert await book_appointment("Jane Doe", "whenever", "x") == {"booked": False, "reason": "'whenever' is not a date"}


async def test_a_full_day_offers_the_next_open_day(domain: Domain) -> None:
    for _ in range(13):
        assert (await book_appointment("A", "2026-12-04", "x"))["booked"]
    assert await book_appointment("A", "2026-12-04", "x") == {
        "booked": False, "reason": "that day is fully booked", "next_available": "2026-12-07"}


@pytest.mark.parametrize(("symptoms", "level"), [
    ("I have crushing chest pain", "emergency"),
    ("she passed out and won't wake up", "emergency"),
    ("I think my wrist is broken", "urgent"),
    ("a high fever since last night", "urgent"),
    ("a mild cough", "routine"),
])
async def test_triage(domain: Domain, symptoms: str, level: str) -> None:
    assert (await triage(symptoms))["level"] == level


@pytest.mark.parametrize(("party", "conflict"), [
    ("Globex Industries", True),
    ("globex industries inc.", True),
    ("Acme Corp", True),
    ("Initech", True),
    ("Northwind Traders", False),
    ("Acme Widgets Company", True),  # conservative: a name holding a client's whole name is flagged for review
    ("Globe Industries", False),
])
async def test_check_conflicts(domain: Domain, party: str, conflict: bool) -> None:
    result = await check_conflicts(party)
    assert result["conflict"] is conflict
    assert bool(result["matches"]) is conflict


@pytest.mark.parametrize(("question", "topic"), [
    ("What is my deductible?", "deductible"),
    ("How does roadside assistance work if I get a flat tire?", "roadside"),
    ("Can I get a rental car while mine is fixed?", "rental"),
    ("How do I pay my bill?", "payment"),
    ("I want to add a new driver", "add_driver"),
    ("Can I insure my pet llama against space debris?", None),
    ("", None),
])
async def test_search_kb(domain: Domain, question: str, topic: str | None) -> None:
    result = await search_kb(question)
    assert result.get("topic") == topic and result["found"] is (topic is not None)


async def test_call_actions_are_markers() -> None:
    assert await transfer_to_human("caller asked") == {"action": "transfer", "reason": "caller asked"}
    assert await hang_up() == {"action": "hangup"}


async def test_numbering_goes_on_after_a_restart_and_paths_come_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEGRAPH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("VOICEGRAPH_DATA_DIR", str(tmp_path / "data"))
    made = Domain()
    assert made.claims.path == tmp_path / "state" / "claims.jsonl"
    assert made.appointments.path == tmp_path / "state" / "appointments.jsonl"
    assert made.data_dir == tmp_path / "data"
    await made.claims.add({"n": 1})
    again = ClaimsStore(made.claims.path)
    assert (await again.add({"n": 2}))["claim_number"] == "CLM-100002"
