"""Token assembly of a slot input: the template's segments tokenized one by one, the mask widened for multi-piece words,
and truncation that keeps the slot and the query and cuts the response and the explanation first.

Shared by inference and training (the same ids reach the model in both). Needs a Hugging Face tokenizer only: no
torch here.

Segments are tokenized separately and concatenated (rather than the rendered string at once), so the mask can never
be cut and each field can be shortened by tokens. A BPE tokenizer may merge a few characters differently at a seam
than it would in one string; that is the same in training and inference, so a trained slot model sees what it learned
on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cerm.protocol import SlotTemplate

_CUT_FIRST = ("response", "explanation")


@dataclass(frozen=True)
class SlotInput:
    """One thing to read at the slot: the query, the response and (when the template has one) the explanation."""

    query: str
    response: str
    explanation: str = ""


@dataclass(frozen=True)
class Encoded:
    """Token ids of one slot input (special tokens included) and where its mask tokens are."""

    ids: list[int]
    mask_positions: list[int]
    warnings: tuple[str, ...] = ()


class TemplateTooLong(ValueError):
    """The template's own text (with the slot) does not fit the model's length limit: nothing can be read."""


def word_pieces(tokenizer: Any, word: str, space_before: bool) -> list[int]:
    """The token ids of a verbalizer word as it appears at the slot (after a space when the template puts one there)."""
    ids: list[int] = tokenizer((" " + word) if space_before else word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the tokenizer gives no tokens for the verbalizer word {word!r}")
    return ids


def _tokens(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    # verbose=False: a field longer than the model's limit is expected here (it is cut below), not worth a warning.
    ids: list[int] = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return ids


def _fit(lengths: dict[str, int], room: int) -> dict[str, int]:
    """How many tokens each of the cut-first fields keeps: the shorter keeps all it can up to an equal share, the
    longer the rest (so one long field is cut, two long ones are cut to equal lengths)."""
    names = sorted(lengths, key=lambda n: lengths[n])
    kept: dict[str, int] = {}
    left = max(room, 0)
    for position, name in enumerate(names):
        share = left // (len(names) - position)
        kept[name] = min(lengths[name], share)
        left -= kept[name]
    return kept


def encode(
    tokenizer: Any,
    template: SlotTemplate,
    item: SlotInput,
    *,
    mask_tokens: list[int] | None,
    max_length: int,
    special: bool = True,
    reserve: int = 0,
) -> Encoded:
    """Assemble one slot input.

    ``mask_tokens``: the ids that fill the slot (several mask tokens for a multi-piece word in a masked LM; None for a
    causal cloze, where the sequence ends just before the slot and the text after it is dropped). ``special``: wrap in
    the tokenizer's special tokens (``[CLS] ... [SEP]``); a causal cloze keeps only what the tokenizer puts first.

    Truncation keeps the template text, the slot and the query: the response and the explanation are cut first (at
    their ends), and the query only when even they are gone; each cut is a warning. ``reserve`` keeps that many
    more tokens free (a reader that widens the slot for several word lengths reserves the widest, so every width
    sees the same truncated text).
    """
    causal = mask_tokens is None
    segments = template.segments()
    if causal:
        segments = segments[: [kind for kind, _ in segments].index("mask") + 1]
    space_before = template.space_before_mask
    values = {"query": item.query, "response": item.response, "explanation": item.explanation}
    pieces: list[tuple[str, list[int]]] = []
    carried = ""  # spaces moved from a literal to the field after it
    for position, (kind, literal) in enumerate(segments):
        following = segments[position + 1][0] if position + 1 < len(segments) else None
        if kind == "text":
            text = literal
            if following == "mask" and space_before:
                # The space before the slot belongs to the verbalizer word (see word_pieces), not to the text.
                text = literal.rstrip()
            elif following is not None and values.get(following):
                # A BPE tokenizer writes a word after a space as one token with the space ("Ġwhat"); a space left at
                # the end of a literal would be a lone token the model never sees in running text.
                text = literal.rstrip(" ")
                carried = literal[len(text) :]
            pieces.append(("text", _tokens(tokenizer, text)))
        elif kind == "mask":
            pieces.append(("mask", list(mask_tokens or [])))
        else:
            pieces.append((kind, _tokens(tokenizer, carried + values[kind])))
            carried = ""
    extra = len(_wrap(tokenizer, [], special, causal))
    fixed = extra + reserve + sum(len(ids) for kind, ids in pieces if kind in ("text", "mask"))
    if fixed >= max_length:
        raise TemplateTooLong(f"the slot template alone takes {fixed} of the model's {max_length} tokens")
    room = max_length - fixed
    lengths = {kind: len(ids) for kind, ids in pieces if kind not in ("text", "mask")}
    warnings: list[str] = []
    if sum(lengths.values()) > room:
        query = lengths.get("query", 0)
        cut = {name: lengths[name] for name in _CUT_FIRST if name in lengths}
        kept = _fit(cut, room - query)
        if query > room:
            kept["query"] = room
        for name, keep in kept.items():
            if keep < lengths[name]:
                warnings.append(
                    f"{name} truncated from {lengths[name]} to {keep} tokens to fit the slot model's "
                    f"{max_length}-token limit"
                )
        pieces = [(kind, ids[: kept[kind]] if kind in kept else ids) for kind, ids in pieces]
    body: list[int] = []
    mask_at = 0
    for kind, ids in pieces:
        if kind == "mask":
            mask_at = len(body)
        body.extend(ids)
    wrapped = _wrap(tokenizer, body, special, causal)
    offset = _offset(tokenizer, special, causal)
    start = offset + mask_at
    if causal:
        return Encoded(wrapped, [], tuple(warnings))
    return Encoded(wrapped, list(range(start, start + len(mask_tokens or []))), tuple(warnings))


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (``[CLS]``/``[SEP]``, ``<s>``/``</s>``, a BOS),
    found by encoding a probe with and without them (transformers 5 has no ``build_inputs_with_special_tokens`` for
    every tokenizer)."""
    probe: list[int] = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain: list[int] = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(probe) - len(plain) + 1):
        if probe[start : start + len(plain)] == plain:
            return probe[:start], probe[start + len(plain) :]
    return [], []


def _wrap(tokenizer: Any, ids: list[int], special: bool, causal: bool) -> list[int]:
    if not special:
        return list(ids)
    lead, trail = special_tokens(tokenizer)
    # A causal cloze keeps what comes first (a BOS), never anything after the prefix (an EOS would end it).
    return lead + list(ids) if causal else lead + list(ids) + trail


def _offset(tokenizer: Any, special: bool, causal: bool) -> int:
    """How many special tokens precede the body."""
    return len(special_tokens(tokenizer)[0]) if special else 0
