"""Sharded, resumable bulk scoring: one deterministic shard of a JSONL input per job, results appended as they come,
a restart after a kill picks up where the last complete record ends, and a merge joins the shards in input order.

This is what one task of a SLURM job array or a Kubernetes indexed job runs (``cerm score --shard i/n``); the jobs
share nothing but the output folder.

Layout of the output folder, per shard ``i`` of ``n``:

* ``shard-0000i-of-0000n.jsonl``: one line per scored input item, ``{"id", "index", ...item, "scores",
  "judgments"}``, in the order the items were scored. Append-only: a record is written once its whole batch is
  judged, and flushed to disk before the next batch starts.
* ``shard-0000i-of-0000n.json``: the shard's manifest (the input's SHA-256 and item count), written at the start.
  A resumed shard whose input changed is refused rather than mixed.

Why it is exactly-once: an item is written only after its judgment exists, and a restart skips every item that has a
complete line. A kill can only tear the line being written; the restart cuts that torn tail off and scores the item
again. Items are assigned round-robin (item ``k`` belongs to shard ``k mod n``), so the assignment depends only on
the input and ``n``, and shards hold equal shares of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cerm._errors import ConfigurationError
from cerm._jsonl import iter_json_lines
from cerm._judge import validate_item
from cerm._reward_judge import RewardJudge
from cerm._types import Judgment, Status

logger = logging.getLogger("cerm")

_SHARD_NAME = re.compile(r"^shard-(\d+)-of-(\d+)\.jsonl$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``: the input items whose position ``k`` has ``k % count == index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigurationError(f"a shard is i/n with 0 <= i < n, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"3/8"`` -> shard 3 of 8."""
        index, sep, count = text.partition("/")
        try:
            if not sep:
                raise ValueError(text)
            return cls(int(index), int(count))
        except ValueError:
            raise ConfigurationError(f"a shard is written i/n (e.g. 3/8), got {text!r}") from None

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    @property
    def stem(self) -> str:
        return f"shard-{self.index:05d}-of-{self.count:05d}"


@dataclass(frozen=True)
class ShardReport:
    """What one :func:`score_shard` call did."""

    shard: Shard
    path: Path
    items: int  # items of the input in this shard
    resumed: int  # of them, found already scored (skipped)
    scored: int  # scored by this call
    errored: int  # of those, items with at least one ERROR judgment (no judgment: rerun with retry_errors)
    unscorable: int  # of those, items with at least one UNSCORABLE judgment


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge_shards` wrote, and what it could not find."""

    path: Path
    items: int  # items in the input
    written: int
    missing: tuple[str, ...]  # ids of input items with no record in any shard, in input order
    errored: tuple[str, ...]  # ids of items whose record has an ERROR judgment (rerun with retry_errors)

    @property
    def complete(self) -> bool:
        return not self.missing


def _compact(judgment: Judgment) -> dict[str, Any]:
    return {
        "index": judgment.response_index,
        "status": judgment.status.value,
        "score": judgment.score,
        "reason": judgment.reason,
    }


def score_shard(
    judge: RewardJudge,
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    shard: Shard | str = "0/1",
    *,
    batch_size: int = 16,
    retry_errors: bool = False,
    judgment_record: Callable[[Judgment], dict[str, Any]] = _compact,
    on_batch: Callable[[int], None] | None = None,
) -> ShardReport:
    """Score shard ``shard`` of the JSONL file ``input_path`` into ``output_dir``, resuming a previous run of it.

    Each input line is ``{"query": ..., "responses": [...]}`` with an optional ``"id"`` (default: the item's
    0-based position among the input's non-blank lines), kept in its record. ``retry_errors`` scores again the items
    whose record has an ERROR judgment (an outage); the new record is appended and :func:`merge_shards` keeps the
    last one. ``judgment_record`` shapes each judgment in the output (default: index, status, score, reason).
    ``on_batch`` is called with the number of items written after each batch (progress).
    """
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    shard = Shard.parse(shard) if isinstance(shard, str) else shard
    source = Path(input_path)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{shard.stem}.jsonl"
    digest, total = _input_fingerprint(source)
    _check_manifest(folder / f"{shard.stem}.json", source, digest, total, shard)

    done = _completed(path, retry_errors)
    mine = resumed = scored = errored = unscorable = 0
    batch: list[tuple[int, Any, dict[str, Any]]] = []
    with open(path, "a", encoding="utf-8") as out:

        def flush() -> None:
            nonlocal scored, errored, unscorable
            results = judge.judge_batch([(row["query"], row["responses"]) for _, _, row in batch])
            for (position, item_id, row), judgments in zip(batch, results, strict=True):
                errored += any(j.errored for j in judgments)
                unscorable += any(j.status is Status.UNSCORABLE for j in judgments)
                record = {
                    "id": item_id,
                    "index": position,
                    **{k: v for k, v in row.items() if k != "id"},
                    "scores": [j.score for j in judgments],
                    "judgments": [judgment_record(j) for j in judgments],
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())  # the batch is on disk before the next one starts: a kill loses no written item
            scored += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
            batch.clear()

        for position, item_id, row in _items(source):
            if not shard.owns(position):
                continue
            mine += 1
            if position in done:
                resumed += 1
                continue
            batch.append((position, item_id, row))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    if resumed:
        logger.info("%s: %d of %d items were already scored; scored the other %d", path, resumed, mine, scored)
    return ShardReport(shard, path, mine, resumed, scored, errored, unscorable)


def merge_shards(output_dir: str | os.PathLike[str], merged_path: str | os.PathLike[str] | None = None) -> MergeReport:
    """Join the shard files of ``output_dir`` into one JSONL file in input order (default ``output_dir/merged.jsonl``).

    Every shard must come from the same input and the same shard count (their manifests say so). Items without a
    record (a shard not run, or not finished) are left out and listed in :attr:`MergeReport.missing`; the last
    record of an item wins (a ``retry_errors`` re-run).
    """
    folder = Path(output_dir)
    manifests = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("shard-*-of-*.json"))]
    if not manifests:
        raise ConfigurationError(f"{folder}: no shard manifests (shard-*-of-*.json): nothing was scored there")
    first = manifests[0]
    for manifest in manifests[1:]:
        if (manifest["input_sha256"], manifest["shards"]) != (first["input_sha256"], first["shards"]):
            raise ConfigurationError(f"{folder}: the shards come from different inputs or shard counts; not merged")
    total = int(first["items"])
    records: dict[int, str] = {}
    for path in sorted(folder.glob("shard-*-of-*.jsonl")):
        match = _SHARD_NAME.match(path.name)
        if match is None or int(match.group(2)) != int(first["shards"]):
            raise ConfigurationError(f"{path}: not a shard of {first['shards']}; not merged")
        for line in _complete_lines(path):
            records[int(json.loads(line)["index"])] = line
    target = Path(merged_path) if merged_path is not None else folder / "merged.jsonl"
    missing: list[str] = []
    errored: list[str] = []
    ids = first.get("ids")
    with open(target, "w", encoding="utf-8") as out:
        for position in range(total):
            record = records.get(position)
            name = str(ids[position]) if ids is not None else str(position)
            if record is None:
                missing.append(name)
                continue
            out.write(record + "\n")
            if any(j.get("status") == Status.ERROR.value for j in json.loads(record).get("judgments", ())):
                errored.append(name)
    if missing:
        logger.warning("%d of %d items have no record (first: %s)", len(missing), total, ", ".join(missing[:5]))
    return MergeReport(target, total, total - len(missing), tuple(missing), tuple(errored))


# -- helpers ----------------------------------------------------------------------------------------------------------
def _items(source: Path) -> Iterator[tuple[int, Any, dict[str, Any]]]:
    """``(position, id, row)`` per non-blank input line, validated as the Judge would (bad input names its line)."""
    with open(source, encoding="utf-8") as handle:
        for position, (where, row) in enumerate(iter_json_lines(handle, str(source), ConfigurationError)):
            if not isinstance(row, dict):
                raise ConfigurationError(f"{where}: expected a JSON object, got {type(row).__name__}")
            try:
                query, responses = validate_item(row.get("query"), row.get("responses"))
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{where}: {exc}") from None
            item_id = row.get("id", position)
            if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
                raise ConfigurationError(f"{where}: 'id' must be a string or an integer")
            yield position, item_id, {**row, "query": query, "responses": responses}


def _input_fingerprint(source: Path) -> tuple[str, int]:
    """The input's SHA-256 and its number of items (non-blank lines), read in one streaming pass."""
    if not source.is_file():
        raise ConfigurationError(f"input file not found: {source}")
    sha = hashlib.sha256()
    items = 0
    with open(source, "rb") as handle:
        for line in handle:
            sha.update(line)
            items += bool(line.strip())
    if items == 0:
        raise ConfigurationError(f"{source}: no input rows")
    return sha.hexdigest(), items


def _check_manifest(path: Path, source: Path, digest: str, total: int, shard: Shard) -> None:
    manifest = {
        "input": str(source),
        "input_sha256": digest,
        "items": total,
        "shard": shard.index,
        "shards": shard.count,
    }
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if (previous.get("input_sha256"), previous.get("shards")) != (digest, shard.count):
            raise ConfigurationError(
                f"{path}: this output folder holds a run of another input or shard count; use a new output folder"
            )
        return
    # The ids, so a merge can name missing items even without the input; positions when the input has no ids.
    ids = [item_id for _, item_id, _ in _items(source)]
    if ids != list(range(total)):
        manifest["ids"] = ids
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(manifest), encoding="utf-8")
    temporary.replace(path)  # atomic: a manifest is whole or absent


def _complete_lines(path: Path) -> Iterator[str]:
    """The complete (newline-terminated) lines of a shard file; a torn last line, from a kill, is not one."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n") and line.strip():
                yield line.rstrip("\n")


def _completed(path: Path, retry_errors: bool) -> set[int]:
    """Positions already recorded in a shard file; first cuts off a torn last line so appending starts clean."""
    if not path.exists():
        return set()
    _truncate_torn_tail(path)
    done: dict[int, bool] = {}
    for line in _complete_lines(path):
        record = json.loads(line)
        errored = any(j.get("status") == Status.ERROR.value for j in record.get("judgments", ()))
        done[int(record["index"])] = errored
    return {position for position, errored in done.items() if not (retry_errors and errored)}


def _truncate_torn_tail(path: Path) -> None:
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        # Find the last newline: everything after it is a record cut short by a kill.
        position = size
        while position > 0:
            step = min(65536, position)
            handle.seek(position - step)
            chunk = handle.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                handle.truncate(position - step + cut + 1)
                break
            position -= step
        else:
            handle.truncate(0)
        logger.warning("%s: cut off a torn last record (the previous run was killed mid-write)", path)
