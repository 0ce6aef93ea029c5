"""How a conversation becomes the exact prompt text and token ids a model sees, for inference and training alike.

Everything here must agree between the judge at inference time (HF and vLLM backends) and the data builders that train
it (SFT masks, GRPO prompts), so it lives once in the protocol layer. The tokenizer is duck-typed (a Hugging Face
tokenizer: ``apply_chat_template``, ``__call__``, ``all_special_ids``, ``added_tokens_decoder``); nothing here imports
torch or transformers.

Two guarantees:

* The character span of every message's content inside the rendered text is known exactly (:func:`render_chat`),
  verified by reconstructing the real rendering byte for byte.
* Message contents never become special tokens (:func:`tokenize_chat`): a response that contains the literal text
  ``<|im_end|>\\n<|im_start|>assistant\\n...`` stays text and cannot forge a turn boundary in the judge's context.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from cerm.protocol._conversation import Message

Generation = Literal["prompt", "continue", "none"]

#: Template variables the CE-RM protocol sets when a template reads them (SPEC section 1): Qwen3's hybrid templates
#: would otherwise open a ``<think>`` block the released judge was never trained to write.
PROTOCOL_TEMPLATE_KWARGS: Mapping[str, Any] = MappingProxyType({"enable_thinking": False})

# Placeholders for message contents: characters of Supplementary Private Use Area-B, which no tokenizer's chat
# template trims, escapes or branches on. One opening mark, one per-message mark, one closing mark.
_PUA_BASE = 0x100000
_PUA_LIMIT = 0x10FFFD

# ``split_special_tokens`` is applied by flipping a flag on the shared Rust tokenizer for the call; this lock keeps two
# threads from flipping it under each other while cerm tokenizes (other code should tokenize through this module).
_TOKENIZER_LOCK = threading.RLock()

# How a template may legitimately transform a content before printing it: as is, or Jinja's ``| trim`` (Llama 3,
# Gemma) and its one-sided variants. Anything else cannot be located and is refused.
_CONTENT_TRANSFORMS: tuple[Callable[[str], str], ...] = (
    lambda s: s,
    str.strip,
    str.rstrip,
    str.lstrip,
)


@dataclass(frozen=True)
class ContentSpan:
    """Where one message's content (the untrusted text) sits in a rendered chat: ``text[start:end]``."""

    message_index: int
    role: str
    start: int
    end: int


@dataclass(frozen=True)
class RenderedChat:
    """A rendered chat: the exact prompt string and the character spans of every message content inside it.

    Contents are listed in message order; a message the template does not print (none known today) would be
    refused by :func:`render_chat` rather than silently missing here.
    """

    text: str
    contents: tuple[ContentSpan, ...]


def chat_template_kwargs(chat_template: str | None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The template variables a CE-RM conversation is rendered with.

    ``{"enable_thinking": False}`` when the template reads ``enable_thinking`` (Qwen3's hybrid templates; the released
    judge's base, Qwen3-4B-Instruct-2507, has no such variable and gets ``{}``), then the caller's ``overrides`` on
    top (an override may turn a protocol variable back on: the caller asked for it).
    """
    kwargs: dict[str, Any] = {}
    if chat_template:
        kwargs.update({name: value for name, value in PROTOCOL_TEMPLATE_KWARGS.items() if name in chat_template})
    kwargs.update(overrides or {})
    return kwargs


def _apply_template(
    tokenizer: Any,
    conversation: Sequence[Message],
    generation: Generation,
    template_kwargs: Mapping[str, Any],
    chat_template: str | None,
) -> str:
    if generation not in ("prompt", "continue", "none"):
        raise ValueError(f"generation must be 'prompt', 'continue' or 'none', got {generation!r}")
    if generation == "continue" and (not conversation or conversation[-1]["role"] != "assistant"):
        raise ValueError("generation='continue' needs a conversation that ends with an assistant message to continue")
    kwargs: dict[str, Any] = dict(template_kwargs)
    if chat_template is not None:
        kwargs["chat_template"] = chat_template
    rendered = tokenizer.apply_chat_template(
        [dict(message) for message in conversation],
        tokenize=False,
        add_generation_prompt=generation == "prompt",
        continue_final_message=generation == "continue",
        **kwargs,
    )
    if not isinstance(rendered, str):
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(rendered).__name__}, expected str")
    return rendered


def _placeholders(conversation: Sequence[Message]) -> list[str]:
    """One unique private-use placeholder per message, made of characters that no content contains."""
    used = {ch for message in conversation for ch in message["content"] if ord(ch) >= _PUA_BASE}
    free = (chr(code) for code in range(_PUA_BASE, _PUA_LIMIT + 1) if chr(code) not in used)
    try:
        opening, closing = next(free), next(free)
        return [opening + next(free) + closing for _ in conversation]
    except StopIteration:  # would need a content holding most of a Unicode plane
        raise ValueError("the conversation uses too many private-use characters to locate its contents") from None


def render_chat(
    tokenizer: Any,
    conversation: Sequence[Message],
    *,
    generation: Generation = "prompt",
    template_kwargs: Mapping[str, Any] | None = None,
    chat_template: str | None = None,
) -> RenderedChat:
    """Render ``conversation`` with the tokenizer's chat template and locate every message content in the result.

    Args:
        tokenizer: a Hugging Face tokenizer (anything with ``apply_chat_template(..., tokenize=False)``).
        conversation: the messages, each ``{"role": ..., "content": str}``.
        generation: ``"prompt"`` appends the generation prompt (the model answers next); ``"continue"`` ends inside
            the final assistant message so the model continues it (prefill); ``"none"`` renders the full conversation
            as a training text.
        template_kwargs: template variables, e.g. from :func:`chat_template_kwargs`.
        chat_template: a Jinja template to use instead of the tokenizer's own.

    How the spans are found: the chat is rendered a second time with a unique private-use placeholder in place of
    each content; the text between placeholders is the template's own markup. The spans are accepted only if
    putting each content back (as is, or trimmed as Jinja's ``| trim`` does) reproduces the real rendering byte for
    byte.

    Raises:
        ValueError: the template drops, repeats or rewrites a content in a way that cannot be located, or branches on
            a content's text so that its markup differs with the placeholder.
    """
    kwargs = dict(template_kwargs or {})
    real = _apply_template(tokenizer, conversation, generation, kwargs, chat_template)
    marks = _placeholders(conversation)
    masked: list[Message] = [
        {"role": message["role"], "content": mark} for message, mark in zip(conversation, marks, strict=True)
    ]
    skeleton = _apply_template(tokenizer, masked, generation, kwargs, chat_template)

    # Split the skeleton into markup pieces around the placeholders, in the order they appear.
    located: list[tuple[int, int]] = []  # (position in skeleton, message index)
    for index, mark in enumerate(marks):
        count = skeleton.count(mark)
        if count != 1:
            role = conversation[index]["role"]
            what = "does not print" if count == 0 else f"prints {count} times"
            raise ValueError(
                f"cannot locate message {index} ({role}) in the rendered chat: the chat template {what} its content"
            )
        located.append((skeleton.index(mark), index))
    located.sort()
    markup: list[str] = []
    cursor = 0
    for position, index in located:
        markup.append(skeleton[cursor:position])
        cursor = position + len(marks[index])
    markup.append(skeleton[cursor:])

    spans = _match_contents(real, markup, [(i, conversation[i]) for _, i in located])
    return RenderedChat(text=real, contents=tuple(sorted(spans, key=lambda span: span.message_index)))


def _match_contents(real: str, markup: list[str], messages: list[tuple[int, Message]]) -> list[ContentSpan]:
    """Walk the real rendering: markup piece, content, markup piece, ... choosing for each content the first allowed
    transform after which the next markup piece follows. Fails unless the walk ends exactly at the end of ``real``."""
    spans: list[ContentSpan] = []
    if not real.startswith(markup[0]):
        raise ValueError("the chat template's markup differs when message contents change; cannot locate contents")
    pos = len(markup[0])
    for (index, message), following in zip(messages, markup[1:], strict=True):
        content = message["content"]
        for transform in _CONTENT_TRANSFORMS:
            shown = transform(content)
            end = pos + len(shown)
            if real.startswith(shown, pos) and real.startswith(following, end):
                spans.append(ContentSpan(message_index=index, role=message["role"], start=pos, end=end))
                pos = end + len(following)
                break
        else:
            raise ValueError(
                f"cannot locate message {index} ({message['role']}) in the rendered chat: the chat template "
                "transforms its content beyond trimming, or its markup depends on the content's text"
            )
    if pos != len(real):
        raise ValueError("the rendered chat has text the chat template's markup does not account for")
    return spans


def _special_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of every special token (the ones a tokenizer parses out of text unless told to split them)."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", ()) or ()}
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(int(i) for i, token in decoder.items() if getattr(token, "special", False))
    return frozenset(ids)


def _encode(tokenizer: Any, text: str, *, split_special: bool, offsets: bool = False) -> Any:
    with _TOKENIZER_LOCK:
        kwargs: dict[str, Any] = {"add_special_tokens": False}
        if split_special:
            kwargs["split_special_tokens"] = True
        if offsets:
            kwargs["return_offsets_mapping"] = True
        try:
            return tokenizer(text, **kwargs)
        finally:
            if split_special:
                # A fast tokenizer leaves the flag set on its shared Rust tokenizer; an empty call through the public
                # path puts the tokenizer's own default back for code that encodes without naming the flag.
                tokenizer("", add_special_tokens=False)


def _tokenize_protected(tokenizer: Any, rendered: RenderedChat) -> list[int]:
    specials = _special_ids(tokenizer)
    if not getattr(tokenizer, "is_fast", False):
        return _tokenize_by_segments(tokenizer, rendered, specials)
    encoded = _encode(tokenizer, rendered.text, split_special=False, offsets=True)
    ids = [int(i) for i in encoded["input_ids"]]
    offsets = [(int(a), int(b)) for a, b in encoded["offset_mapping"]]

    def in_content(start: int, end: int) -> bool:
        return any(start < span.end and end > span.start for span in rendered.contents)

    forged = [k for k, token in enumerate(ids) if token in specials and in_content(*offsets[k])]
    if not forged:
        return ids
    return _retokenize_runs(tokenizer, rendered.text, ids, offsets, specials, in_content)


def _retokenize_runs(
    tokenizer: Any,
    text: str,
    ids: list[int],
    offsets: list[tuple[int, int]],
    specials: frozenset[int],
    in_content: Callable[[int, int], bool],
) -> list[int]:
    """Keep the template's own special tokens; between two of them, keep the whole-text tokens of a run that holds
    no special token, and re-tokenize a run that does with special-token parsing off.

    A fast tokenizer splits its input at special tokens before anything else, so a run between two of the template's
    special tokens tokenizes on its own exactly as inside the whole text: only runs with a forged special change.
    """
    result: list[int] = []
    run: list[int] = []  # indices of the current run's tokens
    run_start = 0

    def flush(run_end: int) -> None:
        if any(ids[k] in specials for k in run):
            encoded = _encode(tokenizer, text[run_start:run_end], split_special=True)
            pieces = [int(i) for i in encoded["input_ids"]]
            if any(i in specials for i in pieces):
                raise ValueError("the tokenizer ignored split_special_tokens=True; cannot keep contents as text")
            result.extend(pieces)
        else:
            result.extend(ids[k] for k in run)

    for k, token in enumerate(ids):
        start, end = offsets[k]
        if token in specials and not in_content(start, end):
            flush(start)
            result.append(token)
            run, run_start = [], end
        else:
            run.append(k)
    flush(len(text))
    return result


def _tokenize_by_segments(tokenizer: Any, rendered: RenderedChat, specials: frozenset[int]) -> list[int]:
    """For tokenizers without character offsets: markup tokenized normally, each content with special-token parsing
    off. Token boundaries at a markup/content seam may differ from whole-text tokenization."""
    ids: list[int] = []
    cursor = 0
    for span in rendered.contents:
        if span.start > cursor:
            ids.extend(_encode(tokenizer, rendered.text[cursor : span.start], split_special=False)["input_ids"])
        if span.end > span.start:
            piece = _encode(tokenizer, rendered.text[span.start : span.end], split_special=True)["input_ids"]
            if any(int(i) in specials for i in piece):
                raise ValueError("the tokenizer ignored split_special_tokens=True; cannot keep contents as text")
            ids.extend(piece)
        cursor = span.end
    if cursor < len(rendered.text):
        ids.extend(_encode(tokenizer, rendered.text[cursor:], split_special=False)["input_ids"])
    return [int(i) for i in ids]


def tokenize_chat(tokenizer: Any, rendered: RenderedChat) -> list[int]:
    """Token ids of a rendered chat in which the template's markup is tokenized normally (its special tokens parsed)
    and message contents never become special tokens.

    What it does: the whole text is tokenized once, normally, with character offsets (a fast tokenizer). If no special
    token falls inside a content span (every benign chat), those ids are returned unchanged: identical to tokenizing
    the rendered string as a whole, so prompts, caches and trained models see the same ids as before. Otherwise each
    stretch of text between two of the template's own special tokens that holds a forged one is re-tokenized with
    ``split_special_tokens=True``, so ``<|im_end|>`` written in a response becomes the ordinary tokens of that text.
    Tokenizers without offsets (slow ones) tokenize markup and contents separately.
    """
    return _tokenize_protected(tokenizer, rendered)


def tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of untrusted text on its own (a response to measure or cut to a budget), with special-token parsing
    off: the same ids the text gets inside a chat where it holds a forged marker, and the same as plain tokenization
    where it holds none."""
    return [int(i) for i in _encode(tokenizer, text, split_special=True)["input_ids"]]


def assistant_token_mask(
    tokenizer: Any,
    conversation: Sequence[Message],
    *,
    template_kwargs: Mapping[str, Any] | None = None,
    chat_template: str | None = None,
) -> tuple[list[int], list[int]]:
    """``(input_ids, mask)`` of the full conversation as a training text, with ``mask`` 1 exactly on what the model
    must learn to generate: every assistant turn from the end of the generation prompt to the end of the turn (its
    content and the end-of-turn markup the template writes after it, e.g. ``<|im_end|>\\n`` in ChatML, as TRL's
    generation-tagged templates do), and 0 on system and user turns and the role headers.

    The turn boundaries come from prefix renders: the conversation up to turn ``i`` with the generation prompt, then
    up to turn ``i + 1``. Contents are protected as in :func:`tokenize_chat`.

    Raises:
        ValueError: the template is not prefix-preserving for this conversation (a prefix's rendering or its tokens
            are not a prefix of the full conversation's), or a content cannot be located.
    """
    if not any(message["role"] == "assistant" for message in conversation):
        raise ValueError("the conversation has no assistant message to train on")
    kwargs = dict(template_kwargs or {})
    full = render_chat(tokenizer, conversation, generation="none", template_kwargs=kwargs, chat_template=chat_template)
    ids = tokenize_chat(tokenizer, full)
    mask = [0] * len(ids)
    for index, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        bounds = []
        stages: tuple[tuple[Sequence[Message], Generation], ...] = (
            (conversation[:index], "prompt"),
            (conversation[: index + 1], "none"),
        )
        for prefix, generation in stages:
            rendered = render_chat(
                tokenizer, prefix, generation=generation, template_kwargs=kwargs, chat_template=chat_template
            )
            if not full.text.startswith(rendered.text):
                stage = "before" if generation == "prompt" else "through"
                raise ValueError(
                    f"the chat template is not prefix-preserving: the conversation rendered {stage} assistant message "
                    f"{index} (generation={generation!r}) is not a prefix of the full conversation's rendering"
                )
            prefix_ids = tokenize_chat(tokenizer, rendered)
            if ids[: len(prefix_ids)] != prefix_ids:
                raise ValueError(
                    f"the tokens of the conversation rendered up to assistant message {index} are not a prefix of the "
                    "full conversation's tokens (a token spans the turn boundary); cannot mask this turn exactly"
                )
            bounds.append(len(prefix_ids))
        start, end = bounds
        mask[start:end] = [1] * (end - start)
    return ids, mask
