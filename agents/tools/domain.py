"""The shipped agents' tools: caller verification, policies, claims, appointments, triage, conflicts, support.

Plain async functions with type hints; the tool store (``agents.tools.store``) makes
their JSON schemas and registers :data:`DOMAIN_TOOLS`. The first docstring line of each
is what a model reads. Every result is a JSON object.

Data: read-only files in ``config/data/`` (or ``$VOICEGRAPH_DATA_DIR``), read once per
worker off the event loop — ``profiles.json`` (callers; the demo profile is Jane Doe,
born March 3, 1980, policy POL-12345, member MEM-24680: see the README there),
``policies.json``, ``clinic.json`` (opening days, hours, closed dates), ``clients.json``
(the law firm's clients and adverse parties), ``kb.json`` (support answers) and
``triage.json`` (symptom words by urgency). What the tools write goes to JSON-lines files
in ``$VOICEGRAPH_STATE_DIR`` (default: ``<temp dir>/voicegraph``): ``claims.jsonl``
behind :class:`ClaimsStore`, ``appointments.jsonl`` behind :class:`AppointmentStore`;
the state issue puts the same interfaces on a database.

Tests (and a worker that wants other data) swap the whole :class:`Domain` with
:func:`use_domain`. Caller answers are taken in the forms a caller or a model gives
them: a date of birth as ``"1980-03-03"`` or ``"March 3, 1980"``, a policy number as
``"POL-12345"`` or ``"p o l 1 2 3 4 5"`` (the IVR engine's slot parsers read them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import tempfile
import threading
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from agents.ivr.normalize import normalize
from agents.ivr.slots import SLOT_TYPES, Answer

__all__ = ["DOMAIN_TOOLS", "AppointmentStore", "ClaimsStore", "Domain", "JsonLines", "book_appointment",
           "check_conflicts", "current_domain", "file_claim", "hang_up", "lookup_policy", "search_kb",
           "transfer_to_human", "triage", "use_domain", "verify_caller"]

DATA_DIR = Path(__file__).resolve().parents[2] / "config" / "data"
_STOPWORDS = frozenset({"the", "a", "an", "my", "i", "is", "to", "do", "how", "what", "can", "of", "for", "on",
                        "in", "and", "or", "it", "me", "you", "your", "does", "did", "when", "where", "why", "with",
                        "about", "please", "there", "are", "be", "if", "at", "have", "has", "get", "this", "that"})
_COMPANY_SUFFIXES = frozenset({"inc", "incorporated", "corp", "corporation", "co", "company", "llc", "ltd",
                               "limited", "plc", "group", "the"})


class JsonLines:
    """An append-only JSON-lines file, written off the event loop, one writer at a time.

    The lock is a thread lock held in the worker thread around read-then-append, so that
    numbering is right whichever event loop (or thread) the calls come from.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    async def read(self) -> list[dict[str, Any]]:
        """Every record, oldest first (none if the file does not exist yet)."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    async def append(self, make: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> dict[str, Any]:
        """Append ``make(existing records)`` and return it; an empty record is not written.

        ``make`` sees every earlier record (numbering, free times) under the lock."""
        return await asyncio.to_thread(self._append, make)

    def _append(self, make: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            record = make(self._read())
            if not record:  # nothing to add after all
                return record
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            return record


class ClaimsStore(JsonLines):
    """Filed claims, numbered ``CLM-100001`` upwards."""

    async def add(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """File a claim: ``fields`` plus its ``claim_number`` and ``filed_at`` (UTC, ISO); the stored record."""
        def make(existing: list[dict[str, Any]]) -> dict[str, Any]:
            return {"claim_number": f"CLM-{100001 + len(existing)}", **fields,
                    "filed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        return await self.append(make)

    async def get(self, claim_number: str) -> dict[str, Any] | None:
        """The stored claim, or None."""
        return next((c for c in await self.read() if c.get("claim_number") == claim_number), None)


class AppointmentStore(JsonLines):
    """Booked appointments, ``{"date", "time", "patient_name", "reason", "confirmation"}``."""

    async def book(self, day: str, times: list[str], patient_name: str, reason: str) -> dict[str, Any] | None:
        """The first of ``times`` on ``day`` nobody holds, booked; None if all are taken."""
        def make(existing: list[dict[str, Any]]) -> dict[str, Any]:
            taken = {a["time"] for a in existing if a.get("date") == day}
            free = next((t for t in times if t not in taken), None)
            if free is None:
                return {}
            return {"date": day, "time": free, "patient_name": patient_name, "reason": reason,
                    "confirmation": f"APT-{5001 + len(existing)}"}
        record = await self.append(make)
        return record or None


class Domain:
    """The data the domain tools work on: read-only files in ``data_dir``, written records in ``state_dir``."""

    def __init__(self, data_dir: Path | str | None = None, state_dir: Path | str | None = None, *,
                 today: Callable[[], dt.date] = dt.date.today) -> None:
        self.data_dir = Path(data_dir or os.environ.get("VOICEGRAPH_DATA_DIR") or DATA_DIR)
        state = Path(state_dir or os.environ.get("VOICEGRAPH_STATE_DIR")
                     or Path(tempfile.gettempdir()) / "voicegraph")
        self.claims = ClaimsStore(state / "claims.jsonl")
        self.appointments = AppointmentStore(state / "appointments.jsonl")
        self.today = today
        self._files: dict[str, Any] = {}

    async def data(self, name: str) -> Any:
        """``<data_dir>/<name>.json``, parsed once (two first uses at once may both read it: harmless)."""
        if name not in self._files:
            path = self.data_dir / f"{name}.json"
            self._files[name] = await asyncio.to_thread(lambda: json.loads(path.read_text(encoding="utf-8")))
        return self._files[name]


_domain: Domain | None = None


def current_domain() -> Domain:
    """The worker's :class:`Domain` (built from the environment on first use)."""
    global _domain
    if _domain is None:
        _domain = Domain()
    return _domain


def use_domain(domain: Domain | None) -> Domain | None:
    """Make ``domain`` the one the tools use (None: rebuild from the environment); returns the previous one."""
    global _domain
    previous, _domain = _domain, domain
    return previous


def _parse(type_name: str, text: str, today: dt.date) -> Any:
    return SLOT_TYPES[type_name].parse(Answer(text, normalize(text), "", today), {})


def _same_name(a: str, b: str) -> bool:
    return normalize(a).split() == normalize(b).split()


def _words(text: str) -> set[str]:
    return {w.rstrip("s") if len(w) > 3 else w for w in normalize(text).split()} - _STOPWORDS


# -- insurance ---------------------------------------------------------------------------------------------------

async def verify_caller(name: str, date_of_birth: str, policy_number: str) -> dict[str, Any]:
    """Verify a caller's identity: full name, date of birth and policy or member number must match one profile."""
    domain = current_domain()
    dob = _parse("date", date_of_birth, domain.today())
    # the digits identify the policy; its letters are a public prefix that recognisers
    # often mishear ("Paul one two three..."), so they are not compared
    digits = "".join(c for c in normalize(policy_number) if c.isdigit())
    for profile in (await domain.data("profiles"))["profiles"]:
        numbers = [profile.get(k, "") for k in ("policy_number", "member_number")]
        if (_same_name(profile["name"], name) and profile["date_of_birth"] == dob and len(digits) >= 4
                and digits in ("".join(c for c in n if c.isdigit()) for n in numbers)):
            caller = {k: profile[k] for k in ("id", "name", "first_name", "policy_number", "member_number")
                      if k in profile}
            return {"verified": True, "caller": caller}
    # which detail was wrong is not said: that would help someone guessing
    return {"verified": False, "reason": "the details do not match our records"}


async def lookup_policy(policy_number: str) -> dict[str, Any]:
    """Look up an insurance policy by number: holder, type, status, vehicle, coverage and deductible."""
    domain = current_domain()
    number = _parse("policy_id", policy_number, domain.today()) or policy_number
    policy = (await domain.data("policies"))["policies"].get(number)
    if policy is None:
        return {"found": False, "policy_number": number}
    return {"found": True, "policy_number": number, **policy}


async def file_claim(policy_number: str, incident_date: str, location: str, description: str, injuries: bool,
                     vehicle: str) -> dict[str, Any]:
    """File a first notice of loss for an active policy; returns the claim number to read back to the caller."""
    domain = current_domain()
    policy = await lookup_policy(policy_number)
    if not policy["found"] or policy.get("status") != "active":
        return {"filed": False, "reason": f"no active policy {policy['policy_number']}"}
    day = _parse("date", incident_date, domain.today())
    if day is None or day > domain.today().isoformat():
        return {"filed": False, "reason": f"the incident date {incident_date!r} is not a past date"}
    record = await domain.claims.add({"policy_number": policy["policy_number"], "incident_date": day,
                                      "location": location, "description": description, "injuries": injuries,
                                      "vehicle": vehicle})
    return {"filed": True, "claim_number": record["claim_number"], "status": "open"}


# -- clinic --------------------------------------------------------------------------------------------------------

async def book_appointment(patient_name: str, date: str, reason: str) -> dict[str, Any]:
    """Book the first free clinic appointment on a date; if none, says why and the next date with one."""
    domain = current_domain()
    clinic = await domain.data("clinic")
    today = domain.today()
    wanted = _parse("date", date, today)
    if wanted is None:
        return {"booked": False, "reason": f"{date!r} is not a date"}
    day = dt.date.fromisoformat(wanted)
    if day < today:
        return {"booked": False, "reason": "that date has passed", "next_available": _next_open(clinic, today)}
    if not _open(clinic, day):
        return {"booked": False, "reason": "the clinic is closed that day",
                "next_available": _next_open(clinic, day)}
    record = await domain.appointments.book(wanted, list(clinic["hours"]), patient_name, reason)
    if record is None:
        return {"booked": False, "reason": "that day is fully booked",
                "next_available": _next_open(clinic, day + dt.timedelta(days=1))}
    return {"booked": True, **record}


def _open(clinic: Mapping[str, Any], day: dt.date) -> bool:
    return day.strftime("%A") in clinic["open_days"] and day.isoformat() not in clinic["closed_dates"]


def _next_open(clinic: Mapping[str, Any], day: dt.date) -> str:
    for _ in range(366):
        if _open(clinic, day):
            return day.isoformat()
        day += dt.timedelta(days=1)
    return ""


async def triage(symptoms: str) -> dict[str, Any]:
    """Triage symptoms: emergency (a person at once), urgent (seen today) or routine, with advice."""
    rules = await current_domain().data("triage")
    text = f" {normalize(symptoms)} "
    for level in ("emergency", "urgent"):
        matched = [w for w in rules[level] if f" {normalize(w)} " in text]
        if matched:
            return {"level": level, "matched": matched, "advice": rules["advice"][level]}
    return {"level": "routine", "matched": [], "advice": rules["advice"]["routine"]}


# -- law firm ------------------------------------------------------------------------------------------------------

async def check_conflicts(party: str) -> dict[str, Any]:
    """Check a party against the firm's clients and adverse parties; any match is a conflict of interest."""
    wanted = _entity(party)
    matches = [{"name": c["name"], "role": c["role"], "matter": c["matter"]}
               for c in (await current_domain().data("clients"))["clients"]
               if wanted and (_entity(c["name"]) == wanted or set(_entity(c["name"]).split()) <= set(wanted.split()))]
    return {"conflict": bool(matches), "matches": matches}


def _entity(name: str) -> str:
    return " ".join(w for w in normalize(name).split() if w not in _COMPANY_SUFFIXES)


# -- support -------------------------------------------------------------------------------------------------------

async def search_kb(question: str) -> dict[str, Any]:
    """Search the support knowledge base; found is false when no article answers the question."""
    asked = _words(question)
    best, best_score = None, 0
    for article in (await current_domain().data("kb"))["articles"]:
        score = sum(1 for keyword in article["keywords"] if _words(keyword) <= asked)
        if score > best_score:
            best, best_score = article, score
    if best is None:
        return {"found": False}
    return {"found": True, "topic": best["id"], "answer": best["answer"]}


# -- call actions --------------------------------------------------------------------------------------------------

async def transfer_to_human(reason: str) -> dict[str, Any]:
    """Transfer the call to a human agent, saying why (the orchestrator acts on the call)."""
    return {"action": "transfer", "reason": reason}


async def hang_up() -> dict[str, Any]:
    """End the call politely once the caller is done (the orchestrator acts on the call)."""
    return {"action": "hangup"}


DOMAIN_TOOLS: list[Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = [
    verify_caller, lookup_policy, file_claim, book_appointment, triage, check_conflicts, search_kb,
    transfer_to_human, hang_up]
