"""Conversation: the history keeps only what the caller heard."""

from __future__ import annotations

import pytest

from processors.text.context import Conversation, Message

SYSTEM = {"role": "system", "content": "You are a bank assistant."}


def speaking(conversation: Conversation, turn: int, clauses: list[tuple[str, float]]) -> None:
    conversation.begin_bot(turn)
    for text, audio_ms in clauses:
        conversation.bot_text_queued(turn, text, audio_ms)


def test_interrupt_keeps_played_clauses_and_a_proportional_part_of_the_current_one() -> None:
    conversation = Conversation("You are a bank assistant.")
    conversation.add_user("Hi there", turn=1)
    speaking(conversation, 1, [("Hello, thanks for calling.", 1500), ("How can I help you today?", 1000)])
    conversation.bot_audio_played(1, 1500)  # the whole first clause
    conversation.bot_audio_played(1, 400)  # 40 % of "How can I help you today?" (25 chars)
    assert conversation.interrupt(1) == "Hello, thanks for calling. How can I"
    assert conversation.messages() == [
        SYSTEM,
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello, thanks for calling. How can I"},
    ]
    assert conversation.history[-1] == Message(
        role="assistant", content="Hello, thanks for calling. How can I", turn=1, interrupted=True
    )


@pytest.mark.parametrize(
    ("played_ms", "heard"),
    [
        (0, ""),
        (100, ""),  # "Y" of "Your": no whole word yet
        (280, "Your"),  # 28 % of 19 chars = 5 characters: inside "card", so back to "Your"
        (500, "Your card"),  # 9 characters: "Your card" just complete
        (560, "Your card"),  # mid "is"
        (1000, "Your card is ready."),
        (5000, "Your card is ready."),
    ],
)
def test_partial_clause_is_cut_to_whole_words(played_ms: float, heard: str) -> None:
    conversation = Conversation()
    speaking(conversation, 4, [("Your card is ready.", 1000)])
    conversation.bot_audio_played(4, played_ms)
    assert conversation.interrupt(4) == heard


def test_a_reply_heard_not_at_all_is_dropped() -> None:
    conversation = Conversation()
    conversation.add_user("Cancel my card", turn=2)
    speaking(conversation, 2, [("Sure, I can do that.", 1200)])
    assert conversation.interrupt(2) == ""
    assert conversation.messages() == [{"role": "user", "content": "Cancel my card"}]


def test_clauses_not_yet_synthesised_are_not_heard() -> None:
    conversation = Conversation()
    speaking(conversation, 1, [("First part.", 500), ("Second part.", 0)])
    conversation.bot_audio_played(1, 800)
    assert conversation.interrupt(1) == "First part."


def test_streaming_audio_lengths_add_up_per_clause() -> None:
    conversation = Conversation()
    conversation.begin_bot(1)
    conversation.bot_text_queued(1, "One two three four.")
    conversation.bot_audio_queued(1, 500)
    conversation.bot_audio_queued(1, 500)
    conversation.bot_audio_played(1, 500)
    assert conversation.history == [
        Message(role="assistant", content="One two", turn=1, live=True)  # heard so far
    ]
    conversation.bot_audio_played(1, 500)
    assert conversation.interrupt(1) == "One two three four."


def test_end_bot_keeps_the_whole_reply() -> None:
    conversation = Conversation()
    conversation.add_user("What time is it?", turn=1)
    speaking(conversation, 1, [("It is noon.", 800), ("Anything else?", 700)])
    conversation.bot_audio_played(1, 1500)
    assert conversation.end_bot(1) == "It is noon. Anything else?"
    assert conversation.messages()[-1] == {"role": "assistant", "content": "It is noon. Anything else?"}
    assert conversation.history[-1].interrupted is False


def test_stale_calls_for_another_turn_are_ignored() -> None:
    conversation = Conversation()
    speaking(conversation, 2, [("New answer.", 1000)])
    conversation.bot_text_queued(1, "Old answer.", 1000)
    conversation.bot_audio_played(1, 1000)  # audio of turn 1 still draining
    assert conversation.interrupt(1) == ""
    conversation.bot_audio_played(2, 1000)
    assert conversation.end_bot(2) == "New answer."


def test_interrupted_marker_is_appended() -> None:
    conversation = Conversation(interrupted_marker="…")
    speaking(conversation, 1, [("I can help you with that today.", 1000)])
    conversation.bot_audio_played(1, 500)
    conversation.interrupt(1)
    assert conversation.messages() == [{"role": "assistant", "content": "I can help you…"}]


def test_user_pieces_of_one_turn_are_joined() -> None:
    conversation = Conversation()
    conversation.add_user("my number is", turn=3)
    conversation.add_user("  five five  five ", turn=3)
    conversation.add_user("", turn=3)
    conversation.add_user("hello?", turn=4)
    assert conversation.messages() == [
        {"role": "user", "content": "my number is five five five"},
        {"role": "user", "content": "hello?"},
    ]


def test_a_new_bot_message_closes_an_unfinished_one_at_what_was_heard() -> None:
    conversation = Conversation()
    speaking(conversation, 1, [("Alpha beta gamma delta.", 1000)])
    conversation.bot_audio_played(1, 600)
    speaking(conversation, 2, [("Next.", 300)])
    conversation.bot_audio_played(2, 300)
    conversation.end_bot(2)
    assert [m.content for m in conversation.history] == ["Alpha beta", "Next."]
    assert [m.interrupted for m in conversation.history] == [True, False]


def test_history_is_bounded_by_message_count() -> None:
    conversation = Conversation("sys", max_messages=3)
    for turn in range(1, 4):
        conversation.add_user(f"question {turn}", turn)
        speaking(conversation, turn, [(f"answer {turn}.", 100)])
        conversation.bot_audio_played(turn, 100)
        conversation.end_bot(turn)
    assert conversation.messages() == [
        {"role": "system", "content": "sys"},
        {"role": "assistant", "content": "answer 2."},
        {"role": "user", "content": "question 3"},
        {"role": "assistant", "content": "answer 3."},
    ]


def test_history_is_bounded_by_characters_but_keeps_the_newest() -> None:
    conversation = Conversation(max_chars=25)
    conversation.add_user("a" * 10, 1)
    conversation.add_user("b" * 10, 2)
    conversation.add_user("c" * 10, 3)
    assert [m["content"] for m in conversation.messages()] == ["b" * 10, "c" * 10]
    conversation.add_user("d" * 40, 4)
    assert [m["content"] for m in conversation.messages()] == ["d" * 40]


def test_system_prompt_can_be_replaced() -> None:
    conversation = Conversation("first")
    conversation.system_prompt = "second"
    conversation.add_user("hi", 1)
    assert conversation.messages() == [
        {"role": "system", "content": "second"},
        {"role": "user", "content": "hi"},
    ]
    conversation.system_prompt = None
    assert conversation.messages() == [{"role": "user", "content": "hi"}]


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        Conversation(max_messages=0)
