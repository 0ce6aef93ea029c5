"""The preference pair: the one record every training stage (curation, teachers, SFT, GRPO) passes along.

A pair is one query with one better and one worse response. ``prompt`` is the query text exactly as the CE-RM prompts
receive it (for a multi-turn dialogue, the earlier turns rendered by :func:`cerm.protocol.format_dialogue`), and
``messages`` keeps those turns structured when the data had them, so nothing is lost for a later stage that wants them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cerm._errors import ConfigurationError
from cerm._jsonl import iter_json_lines
from cerm.protocol import Message

_ROLES = ("system", "user", "assistant")


class PairError(ConfigurationError):
    """A preference pair (or a file of them) that cannot be used; the message names the row."""


@dataclass(frozen=True)
class PreferencePair:
    """One query, one better (``chosen``) and one worse (``rejected``) response.

    * ``id``: unique within a data set; teachers and curation key their records by it.
    * ``prompt``: the query text the CE-RM prompts receive.
    * ``source`` / ``category``: where the pair came from and its task type (curation can cluster on ``source``).
    * ``messages``: the prompt turns as chat messages when the data was multi-turn (the last one is the user turn the
      responses answer), else None.
    * ``meta``: anything else (a generator's ground truth, a data set's own fields). Plain JSON values only.
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    source: str = ""
    category: str = ""
    messages: tuple[Message, ...] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("id", "prompt", "chosen", "rejected"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise PairError(f"pair {self.id!r}: {name!r} must be a non-empty string")
        if self.chosen == self.rejected:
            raise PairError(f"pair {self.id!r}: chosen and rejected are the same text")
        if self.messages is not None:
            for i, message in enumerate(self.messages):
                if message.get("role") not in _ROLES or not isinstance(message.get("content"), str):
                    raise PairError(f"pair {self.id!r}: messages[{i}] must be {{'role': {_ROLES}, 'content': str}}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the JSONL line :func:`write_pairs` writes)."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "source": self.source,
            "category": self.category,
            "messages": None if self.messages is None else [dict(m) for m in self.messages],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "pair") -> PreferencePair:
        """The inverse of :meth:`to_dict`; errors name ``where``."""
        if not isinstance(data, Mapping):
            raise PairError(f"{where}: expected a JSON object, got {type(data).__name__}")
        rejected = data.get("rejected")
        if isinstance(rejected, list):
            if len(rejected) != 1:
                raise PairError(f"{where}: a preference pair has exactly one rejected response, got {len(rejected)}")
            rejected = rejected[0]
        messages = data.get("messages")
        meta = data.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise PairError(f"{where}: 'meta' must be an object")
        try:
            return cls(
                id=str(data.get("id") if data.get("id") is not None else where),
                prompt=data.get("prompt"),  # type: ignore[arg-type]  # validated in __post_init__
                chosen=data.get("chosen"),  # type: ignore[arg-type]
                rejected=rejected,  # type: ignore[arg-type]
                source=str(data.get("source") or ""),
                category=str(data.get("category") or ""),
                messages=None if messages is None else tuple(messages),
                meta=dict(meta),
            )
        except PairError as exc:
            raise PairError(f"{where}: {exc}") from None


def write_pairs(pairs: Iterable[PreferencePair], path: str | Path) -> Path:
    """Write pairs as JSONL (one :meth:`PreferencePair.to_dict` per line); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")
    return path


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Read a JSONL file written by :func:`write_pairs`; ids must be unique."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        pairs = [PreferencePair.from_dict(obj, where) for where, obj in iter_json_lines(handle, str(path), PairError)]
    check_unique_ids(pairs, str(path))
    return pairs


def check_unique_ids(pairs: Sequence[PreferencePair], name: str) -> None:
    """Raise :class:`PairError` naming the first id that appears twice."""
    seen: set[str] = set()
    for pair in pairs:
        if pair.id in seen:
            raise PairError(f"{name}: duplicate pair id {pair.id!r}")
        seen.add(pair.id)


def pairs_digest(pairs: Iterable[PreferencePair]) -> str:
    """A SHA-256 over the pairs' canonical JSON, in order: the content hash manifests record."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps(pair.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
