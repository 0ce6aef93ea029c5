"""Benchmark data: the normalized preference JSONL schema, shared benchmarks by name, and evaluation items.

A row of the schema (described in the README's evaluation section)::

    {"id": str, "source": str, "category": str, "prompt": str,
     "chosen": str, "rejected": [str, ...], "subset": str, "meta": {...}}

An :class:`EvalItem` is what the judge sees at once: one prompt and every candidate that must share one criteria set.
Most rows are one item each (one chosen answer, one or more rejected). RM-Bench rows that share ``meta.item_id`` are one
item in three styles (``meta.style``): they are grouped into a single item with three chosen and three rejected
candidates, so the 3x3 style grid is judged under one criteria set, as a pointwise judge should.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cerm._errors import ConfigurationError
from cerm._jsonl import iter_json_lines

#: Environment variable naming a folder of benchmarks: ``<dir>/<name>/all.jsonl`` or the hub's files in it.
DATA_DIR_ENV = "CERM_DATA_DIR"

#: Shared benchmark names (and aliases) that resolve to ``<data dir>/<folder>/all.jsonl``.
SHARED_BENCHMARKS = {
    "judgebench": "judgebench",
    "llmbar": "llmbar",
    "rm_bench": "rm_bench",
    "rm-bench": "rm_bench",
    "rmbench": "rm_bench",
    "hh_rlhf": "hh_rlhf",
    "hh-rlhf": "hh_rlhf",
}

# meta fields worth carrying into results: they define published sub-reports (JudgeBench splits by response model).
_KEPT_META = ("response_model", "item_id", "label")


class DataError(ConfigurationError):
    """Benchmark data that cannot be used: missing file, malformed line, a row outside the schema."""


@dataclass(frozen=True)
class BenchmarkRow:
    """One row of the normalized schema."""

    id: str
    source: str
    category: str
    prompt: str
    chosen: str
    rejected: tuple[str, ...]
    subset: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalItem:
    """One prompt and the candidates judged together under one criteria set.

    ``labels[i]`` is ``"chosen"`` or ``"rejected"``; ``styles[i]`` is RM-Bench's style name (else None). ``meta`` keeps
    a few small fields (such as JudgeBench's ``response_model``) for per-group tables.
    """

    id: str
    source: str
    category: str
    subset: str
    prompt: str
    candidates: tuple[str, ...]
    labels: tuple[str, ...]
    styles: tuple[str | None, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)


def data_dir() -> Path | None:
    """Where benchmarks are looked up by folder name: ``$CERM_DATA_DIR``, or None when it is not set (cerm never
    looks beside its own installation: a benchmark preset loads from the Hugging Face Hub instead)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else None


def resolve_data(source: str | os.PathLike[str]) -> Path:
    """A JSONL file for ``source``: an existing file, a folder holding ``all.jsonl``, or a benchmark folder name under
    ``$CERM_DATA_DIR``."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir() and (path / "all.jsonl").is_file():
        return path / "all.jsonl"
    name = str(source)
    if name in SHARED_BENCHMARKS:
        folder = data_dir()
        if folder is None:
            raise DataError(
                f"{name!r} is not a file; set {DATA_DIR_ENV} to the folder that holds "
                f"'{SHARED_BENCHMARKS[name]}/all.jsonl', or load the benchmark from the Hugging Face Hub with "
                "cerm eval --benchmark NAME (cerm.eval.load_benchmark)"
            )
        candidate = folder / SHARED_BENCHMARKS[name] / "all.jsonl"
        if candidate.is_file():
            return candidate
        raise DataError(
            f"benchmark {name!r} not found at {candidate} ({DATA_DIR_ENV}={folder}); put "
            f"'{SHARED_BENCHMARKS[name]}/all.jsonl' there, or use cerm eval --benchmark NAME to load it from the hub"
        )
    known = ", ".join(sorted(set(SHARED_BENCHMARKS.values())))
    raise DataError(f"no data file {name!r} (not a file, not a folder with all.jsonl, not a benchmark folder: {known})")


def _row_from_dict(obj: Any, where: str) -> BenchmarkRow:
    if not isinstance(obj, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("prompt", "chosen"):
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: {key!r} must be a non-empty string")
    rejected = obj.get("rejected")
    if isinstance(rejected, str):
        rejected = [rejected]  # tolerated: a single rejected answer written as a string
    if not isinstance(rejected, list) or not rejected:
        raise DataError(f"{where}: 'rejected' must be a non-empty list of strings")
    for i, text in enumerate(rejected):
        if not isinstance(text, str):
            raise DataError(f"{where}: 'rejected'[{i}] must be a string, got {type(text).__name__}")
    meta = obj.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise DataError(f"{where}: 'meta' must be an object")
    row_id = obj.get("id")
    return BenchmarkRow(
        id=str(row_id) if row_id is not None else where,
        source=str(obj.get("source") or ""),
        category=str(obj.get("category") or "all"),
        prompt=obj["prompt"],
        chosen=obj["chosen"],
        rejected=tuple(rejected),
        subset=str(obj.get("subset") or ""),
        meta=dict(meta),
    )


def load_rows(source: str | os.PathLike[str] | Iterable[Mapping[str, Any]]) -> list[BenchmarkRow]:
    """Read rows of the normalized schema.

    ``source`` is a JSONL path, a folder holding ``all.jsonl``, a shared benchmark name (``"llmbar"``,
    ``"judgebench"``, ``"rm_bench"``, ``"hh_rlhf"``), or any iterable of dicts (a list, or a ``datasets.Dataset``).
    Every row is validated before any judging; an error names the file and line. Ids must be unique.
    """
    rows: list[BenchmarkRow] = []
    if isinstance(source, (str, os.PathLike)):
        path = resolve_data(source)
        with path.open(encoding="utf-8") as handle:
            rows.extend(_row_from_dict(obj, where) for where, obj in iter_json_lines(handle, str(path), DataError))
        name = str(path)
    else:
        rows = [_row_from_dict(obj, f"row {n}") for n, obj in enumerate(source)]
        name = "the given rows"
    if not rows:
        raise DataError(f"{name}: no rows")
    seen: set[str] = set()
    for row in rows:
        if row.id in seen:
            raise DataError(f"{name}: duplicate id {row.id!r}")
        seen.add(row.id)
    return rows


def _style_group(rows: Sequence[BenchmarkRow]) -> EvalItem:
    ordered = sorted(rows, key=lambda r: int(r.meta.get("style", 0)))
    first = ordered[0]
    styles = [str(r.meta.get("style_name", r.meta.get("style"))) for r in ordered]
    chosen = [r.chosen for r in ordered]
    rejected = [r.rejected[0] for r in ordered]
    meta = {k: first.meta[k] for k in _KEPT_META if k in first.meta}
    return EvalItem(
        id=str(first.meta["item_id"]),
        source=first.source,
        category=first.category,
        subset=first.subset,
        prompt=first.prompt,
        candidates=tuple(chosen + rejected),
        labels=("chosen",) * len(chosen) + ("rejected",) * len(rejected),
        styles=tuple(styles + styles),
        meta=meta,
    )


def build_items(rows: Sequence[BenchmarkRow]) -> list[EvalItem]:
    """Evaluation items in first-appearance order: style groups (RM-Bench ``meta.item_id`` + ``meta.style``, one
    rejected answer per row) become one item; every other row is its own item."""
    groups: dict[str, list[BenchmarkRow]] = {}
    order: list[tuple[str, str | BenchmarkRow]] = []
    for row in rows:
        key = row.meta.get("item_id")
        if key is not None and "style" in row.meta and len(row.rejected) == 1:
            key = str(key)
            if key not in groups:
                groups[key] = []
                order.append(("group", key))
            groups[key].append(row)
        else:
            order.append(("row", row))
    items: list[EvalItem] = []
    for kind, ref in order:
        if kind == "group":
            assert isinstance(ref, str)
            items.append(_style_group(groups[ref]))
        else:
            assert isinstance(ref, BenchmarkRow)
            meta = {k: ref.meta[k] for k in _KEPT_META if k in ref.meta}
            items.append(
                EvalItem(
                    id=ref.id,
                    source=ref.source,
                    category=ref.category,
                    subset=ref.subset,
                    prompt=ref.prompt,
                    candidates=(ref.chosen, *ref.rejected),
                    labels=("chosen",) + ("rejected",) * len(ref.rejected),
                    styles=(None,) * (1 + len(ref.rejected)),
                    meta=meta,
                )
            )
    return items


def select_items(items: Sequence[EvalItem], limit: int | None = None, seed: int | None = None) -> list[EvalItem]:
    """A slice of ``items``: with ``seed``, a seeded random sample of ``limit`` items (kept in data order, so the same
    seed and limit always give the same slice); without ``seed``, the first ``limit`` items."""
    if limit is not None and limit < 1:
        raise ConfigurationError(f"limit must be >= 1, got {limit}")
    if limit is None or limit >= len(items):
        return list(items)
    if seed is None:
        return list(items[:limit])
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]


def load_items(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]], limit: int | None = None, seed: int | None = None
) -> list[EvalItem]:
    """Rows -> items -> slice, in one call: ``load_items("llmbar", limit=100, seed=0)``."""
    return select_items(build_items(load_rows(source)), limit, seed)
