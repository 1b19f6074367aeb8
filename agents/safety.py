"""Safety screens: what reaches the LLM, and what reaches the caller's ears.

Inbound (:func:`screen_input`): a caller's transcript and a tool's output may carry a
prompt injection — "ignore previous instructions", "you are now ...", a fake
``system:`` turn, chat-template tokens. Each matched phrase is replaced by
``[removed]`` (the rest of the text stays, so an honest sentence that happens to
contain one is still understood) and the match is returned as a :class:`Flag`, which
the orchestrator emits as a ``SafetyFlag`` event (the report lists them per turn).

Outbound (:func:`screen_reply`): before text goes to TTS, markup and code are taken out
(fenced code blocks, inline backticks, markdown emphasis, headings, bullets, HTML tags,
URLs are kept but tags and symbols are not spoken), and a reply that repeats a
sizeable run of the system prompt (a leak) is replaced by a refusal.

Streaming replies go through a :class:`ReplyScreen`: pieces are held back to the next
clause boundary (the sentence aggregator downstream waits for it anyway), and each clause
is screened before it is released, with the leak check on everything said so far.

The patterns are an explicit list (:data:`INJECTION_PATTERNS`), not a classifier: what is
caught is what is written here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["INJECTION_PATTERNS", "LEAK_REFUSAL", "Flag", "ReplyScreen", "leaks_prompt", "screen_input", "screen_reply"]

_PATTERNS: tuple[tuple[str, str], ...] = (
    ("ignore_instructions", r"\b(?:ignore|disregard|forget|override)\b[\w\s,]{0,30}?\b(?:previous|prior|above|earlier|"
                            r"all|your|the|system)\b[\w\s]{0,20}?\b(?:instructions?|rules|prompts?|directions|guidelines)"),
    ("new_instructions", r"\b(?:new|updated|real)\s+(?:system\s+)?instructions?\s*:"),
    ("role_play", r"\b(?:you\s+are\s+now|from\s+now\s+on\s+you\s+are|pretend\s+(?:to\s+be|you\s+are)|act\s+as\s+"
                  r"(?:an?\s+)?(?:unrestricted|jailbroken|developer|system|admin))\b[^.!?]*"),
    ("fake_role", r"(?:^|\n|\s)(?:system|assistant|developer)\s*:\s*"),
    ("template_token", r"<\|[a-z_]{2,20}\|>|\[/?INST\]|<</?SYS>>"),
    ("reveal_prompt", r"\b(?:reveal|print|show|repeat|read|give|tell\s+me)\b[\w\s]{0,20}?\b(?:system\s+prompt|your\s+"
                      r"(?:instructions|prompt|rules))"),
)
INJECTION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.I)) for name, pattern in _PATTERNS)

LEAK_REFUSAL = "Sorry, I can't share that. How else can I help you?"


@dataclass(frozen=True, slots=True)
class Flag:
    """One screened-out piece: which pattern, what it matched, and where it came from."""

    kind: str
    matched: str
    source: str  # "transcript" | "tool:<name>"


def screen_input(text: str, source: str = "transcript") -> tuple[str, list[Flag]]:
    """``text`` with injection phrases replaced by ``[removed]``, and a flag per phrase."""
    flags: list[Flag] = []
    for kind, pattern in INJECTION_PATTERNS:
        def cut(match: re.Match[str], kind: str = kind) -> str:
            flags.append(Flag(kind, match.group(0).strip(), source))
            return " [removed] " if kind == "fake_role" else "[removed]"
        text = pattern.sub(cut, text)
    if flags:
        text = " ".join(text.split())
    return text, flags


_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.S)
_MARKUP = (
    (re.compile(r"<[^>\n]{1,200}>"), " "),  # HTML/SSML-looking tags
    (re.compile(r"`([^`]*)`"), r"\1"),
    (re.compile(r"(\*\*|__|\*|_)(\S(?:.*?\S)?)\1"), r"\2"),
    (re.compile(r"^\s{0,3}#{1,6}\s*", re.M), ""),
    (re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.M), ""),
    (re.compile(r"\[([^\]]+)\]\([^)]+\)"), r"\1"),  # a markdown link: say its text
)


def screen_reply(text: str, system_prompt: str = "") -> tuple[str, list[Flag]]:
    """``text`` fit to be spoken: markup and code out, no system-prompt leak (module docstring)."""
    flags: list[Flag] = []
    if system_prompt and leaks_prompt(text, system_prompt):
        return LEAK_REFUSAL, [Flag("prompt_leak", text[:80], "reply")]
    block = _CODE_BLOCK.search(text)
    if block is not None:
        flags.append(Flag("code", block.group(0)[:80], "reply"))
        text = _CODE_BLOCK.sub(" ", text)
    cleaned = text
    for pattern, replacement in _MARKUP:
        cleaned = pattern.sub(replacement, cleaned)
    if cleaned != text:
        flags.append(Flag("markup", text[:80], "reply"))
    return " ".join(cleaned.split()), flags


def leaks_prompt(text: str, system_prompt: str, *, words: int = 8) -> bool:
    """True when ``text`` repeats ``words`` consecutive words of ``system_prompt``."""
    prompt = re.findall(r"[a-z0-9']+", system_prompt.lower())
    said = " " + " ".join(re.findall(r"[a-z0-9']+", text.lower())) + " "
    if len(prompt) < words:
        return False
    return any(" " + " ".join(prompt[i:i + words]) + " " in said for i in range(len(prompt) - words + 1))


_BOUNDARY = re.compile(r"[.!?;:,](?=\s)|\n")


class ReplyScreen:
    """:func:`screen_reply` on a stream of pieces, clause by clause (module docstring)."""

    def __init__(self, system_prompt: str = "") -> None:
        self.system_prompt = system_prompt
        self.flags: list[Flag] = []
        self._buffer = ""
        self._said = ""
        self._blocked = False

    def feed(self, piece: str) -> str:
        """The text that may be spoken now ("" while a clause is incomplete)."""
        if self._blocked:
            return ""
        self._buffer += piece
        cut = -1
        for match in _BOUNDARY.finditer(self._buffer):
            if self._buffer.count("```", 0, match.end()) % 2 == 0:  # not inside a code block
                cut = match.end()
        if cut < 0:
            return ""
        head, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._release(head)

    def finish(self) -> str:
        """The rest, screened, at the end of the reply."""
        head, self._buffer = self._buffer, ""
        return "" if self._blocked else self._release(head)

    def _release(self, head: str) -> str:
        if self.system_prompt and leaks_prompt(self._said + " " + head, self.system_prompt):
            self._blocked = True
            self.flags.append(Flag("prompt_leak", head.strip()[:80], "reply"))
            return (" " if self._said else "") + LEAK_REFUSAL
        cleaned, flags = screen_reply(head)
        self.flags += flags
        if not cleaned:
            return ""
        out = (" " if self._said and (head[:1].isspace() or flags) else "") + cleaned
        self._said += out
        return out
