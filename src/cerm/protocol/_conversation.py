"""Assembly of the two CE-RM turns into chat conversations (SPEC section 1)."""

from __future__ import annotations

from typing import Literal, TypedDict

from cerm.protocol._prompts import render_criteria_prompt, render_evaluation_prompt


class Message(TypedDict):
    """One chat message, in the shape every chat template and OpenAI-compatible server accepts."""

    role: Literal["system", "user", "assistant"]
    content: str


Conversation = list[Message]


def criteria_conversation(query: str) -> Conversation:
    """Turn 1: the criteria prompt sees only the query."""
    return [{"role": "user", "content": render_criteria_prompt(query)}]


def evaluation_conversation(query: str, criteria_text: str, response: str) -> Conversation:
    """Turn 2: the whole criteria turn (analysis included) is fed back before the evaluation prompt."""
    return [
        {"role": "user", "content": render_criteria_prompt(query)},
        {"role": "assistant", "content": criteria_text},
        {"role": "user", "content": render_evaluation_prompt(response)},
    ]
