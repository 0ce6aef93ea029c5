"""Rendering a multi-turn dialogue into the single query text the CE-RM prompts receive.

The CE-RM criteria prompt has one ``{query}`` slot. When the responses under evaluation answer the last user turn of a
longer dialogue, the earlier turns are context the judge must see, so the whole dialogue becomes the query text:

* a dialogue of one user message is that message's text, unchanged (so single-turn data renders exactly as before);
* otherwise every turn is written as ``"<Speaker>: <content>"`` with the speaker ``User``, ``Assistant`` or
  ``System``, turns separated by a blank line (``"User: ...\\n\\nAssistant: ...\\n\\nUser: ..."``), the convention
  of Anthropic's HH-RLHF transcripts and of cerm's shared benchmark files.

Contents are kept verbatim apart from surrounding whitespace. Pure function: training and inference render the same
dialogue the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cerm.protocol._conversation import Message

_SPEAKERS = {"user": "User", "assistant": "Assistant", "system": "System"}


def format_dialogue(messages: Sequence[Message] | Sequence[Mapping[str, str]]) -> str:
    """The query text for a dialogue ``[{"role": ..., "content": ...}, ...]`` (see the module docstring).

    Raises ValueError for an empty dialogue, an unknown role or a non-string content.
    """
    if not messages:
        raise ValueError("format_dialogue: the dialogue has no messages")
    for i, message in enumerate(messages):
        if message.get("role") not in _SPEAKERS:
            raise ValueError(
                f"format_dialogue: messages[{i}] has role {message.get('role')!r}; expected one of {sorted(_SPEAKERS)}"
            )
        if not isinstance(message.get("content"), str):
            raise ValueError(f"format_dialogue: messages[{i}] content must be a string")
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{_SPEAKERS[m['role']]}: {m['content'].strip()}" for m in messages)
