"""Preference pairs in: cerm's own JSONL schemas, a ``datasets.Dataset`` (or any list of dicts), and the
Skywork-Reward-Preference schema, from a file, a stage directory or a Hugging Face hub id.

Schemas (``schema="auto"`` detects them from the first row):

* ``"cerm"``: cerm's benchmark schema ``{"id", "source", "category", "prompt", "chosen", "rejected": [...],
  "subset", "meta"}``, read by :func:`cerm.eval.load_rows` (one pair per rejected answer; ids get ``#<i>`` when a
  row has several). Structured turns in ``meta.messages`` (as in the shared HH-RLHF file) become ``messages``.
* ``"pairs"``: what :func:`write_pairs` writes (a row with a ``messages`` key and one ``rejected`` string).
* ``"skywork"``: ``{"chosen": [{"role", "content"}, ...], "rejected": [...], "source": ...}`` as in
  Skywork-Reward-Preference-80K: both lists hold the same prompt turns, then their own final assistant answer. The
  prompt turns are kept as ``messages`` and rendered into ``prompt`` by :func:`cerm.protocol.format_dialogue`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from cerm._errors import ConfigurationError
from cerm.protocol import Message, format_dialogue
from cerm.training._pairs import PairError, PreferencePair, check_unique_ids

Schema = Literal["auto", "cerm", "pairs", "skywork"]
_SCHEMAS = ("auto", "cerm", "pairs", "skywork")

logger = logging.getLogger("cerm")

#: The pairs file inside a stage output directory (``curate`` and ``teach`` write one).
STAGE_PAIRS_FILE = "pairs.jsonl"


def detect_schema(row: Mapping[str, Any]) -> Literal["cerm", "pairs", "skywork"]:
    """The schema of one row: message lists in ``chosen`` mean Skywork; a ``messages`` key with one ``rejected``
    string means cerm's pair file; anything else is read as cerm's benchmark schema."""
    if isinstance(row.get("chosen"), list):
        return "skywork"
    if "messages" in row and isinstance(row.get("rejected"), str):
        return "pairs"
    return "cerm"


def _messages(value: Any, where: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise PairError(f"{where}: expected a non-empty list of messages")
    out: list[Message] = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise PairError(f"{where}[{i}]: expected {{'role': ..., 'content': str}}")
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise PairError(f"{where}[{i}]: unknown role {role!r}")
        out.append({"role": role, "content": message["content"]})
    return out


def skywork_pair(row: Mapping[str, Any], index: int, name: str) -> PreferencePair | str:
    """One Skywork-Reward-Preference row as a pair (see the module docstring), or the reason it cannot be one (an
    empty answer, identical answers: no preference to learn; the loaders skip such rows and say so)."""
    where = f"{name} row {index}"
    chosen = _messages(row.get("chosen"), f"{where}: 'chosen'")
    rejected = _messages(row.get("rejected"), f"{where}: 'rejected'")
    for label, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise PairError(f"{where}: the last '{label}' message must be the assistant's answer")
        if len(turns) < 2 or turns[-2]["role"] != "user":
            raise PairError(f"{where}: '{label}' needs a user turn before the final answer")
    if chosen[:-1] != rejected[:-1]:
        raise PairError(f"{where}: 'chosen' and 'rejected' do not share the same prompt turns")
    prompt_turns = chosen[:-1]
    if reason := _unusable(chosen[-1]["content"], rejected[-1]["content"]):
        return reason
    meta = {k: v for k, v in row.items() if k not in ("chosen", "rejected", "source", "id") and _plain(v)}
    row_id = row.get("id")
    try:
        return PreferencePair(
            id=str(row_id) if row_id is not None else f"{name}-{index}",
            prompt=format_dialogue(prompt_turns),
            chosen=chosen[-1]["content"],
            rejected=rejected[-1]["content"],
            source=str(row.get("source") or ""),
            category=str(row.get("category") or ""),
            messages=tuple(prompt_turns),
            meta=meta,
        )
    except PairError as exc:
        raise PairError(f"{where}: {exc}") from None


def _plain(value: Any) -> bool:
    """JSON-ready scalars and small containers only (meta must stay plain)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _unusable(chosen: str, rejected: str) -> str | None:
    """Why a pair cannot teach or measure a preference, or None: the loaders skip such pairs and say so."""
    if not rejected.strip() or not chosen.strip():
        return "an empty answer"
    if chosen == rejected:
        return "identical chosen and rejected texts"
    return None


def _log_skipped(name: str, skipped: Mapping[str, list[str]]) -> None:
    for reason, ids in skipped.items():
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        logger.warning("%s: skipped %d pairs with %s (%s)", name, len(ids), reason, shown)


def _from_rows(rows: Sequence[Mapping[str, Any]], schema: str, name: str) -> list[PreferencePair]:
    if schema == "skywork":
        pairs: list[PreferencePair] = []
        skipped: dict[str, list[str]] = {}
        for i, row in enumerate(rows):
            pair = skywork_pair(row, i, name)
            if isinstance(pair, str):
                skipped.setdefault(pair, []).append(f"row {i}")
            else:
                pairs.append(pair)
        _log_skipped(name, skipped)
        return pairs
    if schema == "pairs":
        return [PreferencePair.from_dict(row, f"{name} row {i}") for i, row in enumerate(rows)]
    from cerm.eval._data import load_rows

    return _from_benchmark_rows(load_rows(rows), name)


def _from_benchmark_rows(rows: Iterable[Any], name: str) -> list[PreferencePair]:
    pairs: list[PreferencePair] = []
    skipped: dict[str, list[str]] = {}
    for row in rows:
        meta = dict(row.meta)
        raw_messages = meta.pop("messages", None)
        messages: tuple[Message, ...] | None = None
        if raw_messages is not None:
            messages = tuple(_messages(raw_messages, f"{name} row {row.id}: 'meta.messages'"))
        if row.subset:
            meta.setdefault("subset", row.subset)
        for i, rejected in enumerate(row.rejected):
            pair_id = row.id if len(row.rejected) == 1 else f"{row.id}#{i}"
            if reason := _unusable(row.chosen, rejected):  # LLMBar has one of each kind
                skipped.setdefault(reason, []).append(pair_id)
                continue
            pairs.append(
                PreferencePair(
                    id=pair_id,
                    prompt=row.prompt,
                    chosen=row.chosen,
                    rejected=rejected,
                    source=row.source,
                    category=row.category,
                    messages=messages,
                    meta=meta,
                )
            )
    _log_skipped(name, skipped)
    return pairs


def _read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    from cerm._jsonl import iter_json_lines

    with path.open(encoding="utf-8") as handle:
        return [obj for _, obj in iter_json_lines(handle, str(path), PairError)]


def _first_line(path: Path) -> Mapping[str, Any]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PairError(f"{path}:1: malformed JSON ({exc.msg})") from None
                if not isinstance(row, Mapping):
                    raise PairError(f"{path}: expected JSON objects, one per line")
                return row
    raise PairError(f"{path}: no rows")


def load_pairs(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    split: str | None = None,
    schema: Schema = "auto",
    limit: int | None = None,
    name: str | None = None,
) -> list[PreferencePair]:
    """Preference pairs from ``source``:

    * a JSONL file (any schema of the module docstring; a ``.parquet`` file is read with ``datasets``);
    * a stage output directory holding ``pairs.jsonl`` (``curate``, ``teach``), or a folder holding ``all.jsonl``;
    * a shared benchmark name understood by :func:`cerm.eval.load_rows` (``"llmbar"``, ``"hh_rlhf"``, ...);
    * a ``datasets.Dataset`` or any iterable of row dicts;
    * otherwise a Hugging Face hub id (or a local folder laid out like a hub data set), loaded with
      ``datasets.load_dataset(source, split=split or "train")``, e.g. ``"Skywork/Skywork-Reward-Preference-80K-v0.2"``.

    ``limit`` keeps the first pairs. Every row is validated; an error names the row. Ids must be unique. A pair
    whose chosen and rejected answers are the same text, or with an empty answer (a few exist in public sets), is
    skipped with a warning.
    """
    if schema not in _SCHEMAS:
        raise ConfigurationError(f"schema must be one of {_SCHEMAS}, got {schema!r}")
    if limit is not None and limit < 1:
        raise ConfigurationError(f"limit must be >= 1, got {limit}")
    rows: Sequence[Mapping[str, Any]]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(source)
        if path.is_dir() and (path / STAGE_PAIRS_FILE).is_file():
            path = path / STAGE_PAIRS_FILE
        if path.is_file() and path.suffix == ".parquet":
            rows = _hub_rows("parquet", split or "train", data_files=str(path))
        elif path.is_file() or (path.is_dir() and (path / "all.jsonl").is_file()):
            target = path if path.is_file() else path / "all.jsonl"
            kind = detect_schema(_first_line(target)) if schema == "auto" else schema
            if kind == "cerm":
                from cerm.eval._data import load_rows

                pairs = _from_benchmark_rows(load_rows(target), label)
                return _finish(pairs, limit, label)
            rows = _read_jsonl_rows(target)
            return _finish(_from_rows(rows, kind, label), limit, label)
        elif _is_shared_name(str(source)):
            from cerm.eval._data import load_rows

            return _finish(_from_benchmark_rows(load_rows(str(source)), label), limit, label)
        else:
            # A hub id, or a local folder laid out like a hub data set repository (data files by split).
            rows = _hub_rows(str(source), split or "train")
    else:
        label = name or "the given rows"
        # A Dataset (or any iterable) is read row by row, only as far as ``limit`` asks.
        rows = [row for row, _ in zip(source, range(limit), strict=False)] if limit is not None else list(source)
    if limit is not None:
        rows = [rows[i] for i in range(min(limit, len(rows)))]
    if not rows:
        raise PairError(f"{label}: no rows")
    kind = detect_schema(rows[0]) if schema == "auto" else schema
    return _finish(_from_rows(rows, kind, label), limit, label)


def _is_shared_name(name: str) -> bool:
    from cerm.eval._data import SHARED_BENCHMARKS

    return name in SHARED_BENCHMARKS


def _hub_rows(source: str, split: str, **kwargs: Any) -> Sequence[Mapping[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise ConfigurationError(
            f"{source!r} is not a local file; loading it from the hub needs the 'datasets' package "
            "(pip install 'ce-rm[train]')"
        ) from None
    dataset = datasets.load_dataset(source, split=split, **kwargs)
    return cast("Sequence[Mapping[str, Any]]", dataset)  # a Dataset indexes and iterates as row dicts


def _finish(pairs: list[PreferencePair], limit: int | None, label: str) -> list[PreferencePair]:
    if limit is not None:
        pairs = pairs[:limit]
    if not pairs:
        raise PairError(f"{label}: no pairs")
    check_unique_ids(pairs, label)
    return pairs
