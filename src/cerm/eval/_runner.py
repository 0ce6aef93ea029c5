"""The evaluation runner: judge items in fixed chunks, append per-item JSONL as it goes, resume after interruption.

Files in the output folder:

* ``run.json`` - what is being evaluated (data, item fingerprint, judge settings); a rerun into the same folder resumes
  only when these match, so results of different runs are never mixed;
* ``results.jsonl`` - one record per item, in data order once the run completes (see :mod:`cerm.eval._metrics`);
* ``metrics.json``, ``report.md`` and the PNG plots, written at the end from ``results.jsonl`` alone.

Resuming. Items are judged in fixed chunks of ``batch_size`` items cut from the planned list, and a chunk's records are
written together and flushed to disk. A rerun reads ``results.jsonl`` (dropping a last line cut off by the kill), skips
complete chunks, and judges an incomplete chunk again as a whole, writing only its missing items. Re-judging the same
chunk keeps each backend batch identical to an uninterrupted run, so with greedy decoding the final results are the
same; nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cerm._config import JudgeConfig
from cerm._errors import ConfigurationError
from cerm._judge import Judge
from cerm._types import Judgment
from cerm.eval._data import DataError, EvalItem
from cerm.eval._metrics import TiePolicy, UnscorablePolicy, check_policies

logger = logging.getLogger("cerm")

RESULTS_FILE = "results.jsonl"
MANIFEST_FILE = "run.json"


@dataclass(frozen=True)
class EvalRun:
    """The outcome of :func:`evaluate`: the records (data order), the computed metrics and the files written."""

    out_dir: Path
    records: list[dict[str, Any]]
    metrics: dict[str, Any]
    report: Path
    plots: list[Path] = field(default_factory=list)
    resumed_items: int = 0
    judged_items: int = 0


def items_fingerprint(items: Sequence[EvalItem]) -> str:
    """A hash of every item's id, prompt, candidates and labels: a resume must see exactly the same items."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.id, item.prompt, item.candidates, item.labels], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _judge_settings(judge: Judge) -> dict[str, Any]:
    return {
        "model": judge.backend.model_id,
        "backend": judge.backend.name,
        "config": dataclasses.asdict(judge.config),
    }


def _comparable_judge(settings: Any) -> Any:
    """Judge settings with default-valued config fields dropped, so that a setting added to JudgeConfig later (with a
    behaviour-preserving default) does not make an older run look different and block its resume."""
    if not isinstance(settings, Mapping) or not isinstance(settings.get("config"), Mapping):
        return settings
    defaults = {f.name: f.default for f in dataclasses.fields(JudgeConfig)}
    config = {k: v for k, v in settings["config"].items() if k not in defaults or v != defaults[k]}
    return {**settings, "config": config}


def _record(item: EvalItem, judgments: Sequence[Judgment], full: bool) -> dict[str, Any]:
    candidates = []
    for text, label, style, judgment in zip(item.candidates, item.labels, item.styles, judgments, strict=True):
        cand: dict[str, Any] = {
            "label": label,
            "style": style,
            "chars": len(text),
            "status": judgment.status.value,
            "score": judgment.score,
            "reason": judgment.reason,
        }
        if judgment.warnings:
            cand["warnings"] = list(judgment.warnings)
        if full:
            cand["evaluation"] = judgment.evaluation.text if judgment.evaluation else None
        candidates.append(cand)
    # Every candidate shares the item's criteria; an empty response has no chain, so take the first that has one.
    criteria = next((j.criteria for j in judgments if j.criteria is not None), None)
    record: dict[str, Any] = {
        "id": item.id,
        "source": item.source,
        "category": item.category,
        "subset": item.subset,
        "meta": dict(item.meta),
        "criteria_problem": criteria.problem if criteria is not None else None,
        "candidates": candidates,
    }
    if full:
        record["prompt"] = item.prompt
        record["criteria"] = criteria.text if criteria is not None else None
    return record


def read_results(
    path: Path, repair: bool = False, required: tuple[str, ...] = ("id", "candidates")
) -> list[dict[str, Any]]:
    """Records from a results file. A last line cut off by an interruption is dropped (and, with ``repair``, removed
    from the file); a malformed line anywhere else is an error naming the line. A record must hold the ``required``
    keys (the defaults are those of ``cerm eval``; curation's per-pair judgments reuse this reader with theirs)."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records: list[dict[str, Any]] = []
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines) or (number == len(lines) - 1 and lines[-1] == b"")
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or any(key not in obj for key in required):
                raise ValueError("not a result record")
            if number == len(lines):  # no newline after it: the write may not have finished
                raise ValueError("unterminated last line")
        except ValueError as exc:
            if is_last:
                logger.warning("%s:%d: dropping an incomplete last line (%s)", path, number, exc)
                if repair:
                    with path.open("r+b") as handle:
                        handle.truncate(good_bytes)
                break
            raise DataError(
                f"{path}:{number}: malformed result line ({exc}); move the file away to start over"
            ) from None
        records.append(obj)
        good_bytes += len(line) + 1
    return records


def _write_lines(handle: Any, records: Sequence[Mapping[str, Any]]) -> None:
    handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    handle.flush()
    os.fsync(handle.fileno())  # a chunk is on disk before the next one starts


def _check_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path} is unreadable ({exc}); use a new output folder or fresh=True") from None
    different = [k for k in ("data", "items", "n_items") if previous.get(k) != manifest.get(k)]
    if _comparable_judge(previous.get("judge")) != _comparable_judge(manifest.get("judge")):
        different.append("judge")
    if different:
        raise ConfigurationError(
            f"{path.parent} holds results of a different run (differs in: {', '.join(different)}); "
            "use a new output folder, or fresh=True / --fresh to discard them"
        )


def evaluate(
    judge: Judge,
    items: Sequence[EvalItem],
    out_dir: str | os.PathLike[str],
    *,
    data_name: str = "custom",
    batch_size: int = 8,
    tie_policy: TiePolicy = "half",
    unscorable_policy: UnscorablePolicy = "tie",
    plots: bool = True,
    full: bool = False,
    fresh: bool = False,
    progress: bool = True,
    info: Mapping[str, Any] | None = None,
) -> EvalRun:
    """Judge every item (all candidates of an item under one criteria set), write results as it goes, then the report.

    Args:
        judge: any :class:`cerm.Judge`; items go through :meth:`~cerm.Judge.judge_batch`, ``batch_size`` at a time.
        items: from :func:`cerm.eval.load_items`.
        out_dir: output folder; rerunning into it resumes (see the module docs).
        data_name: how the data is named in the report and the manifest.
        tie_policy, unscorable_policy: how ties and pairs without a verdict enter accuracy (see
            :mod:`cerm.eval._metrics`); both are stated in the report.
        plots: write PNG plots (needs matplotlib: ``pip install 'ce-rm[eval]'``).
        full: also store the prompt, criteria and evaluation texts in each record (large).
        fresh: discard results already in ``out_dir`` instead of resuming.
        progress: a tqdm bar with ETA on stderr.
        info: extra lines for the report's header (for example the slice's limit and seed).
    """
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    check_policies(tie_policy, unscorable_policy)
    if not items:
        raise ConfigurationError("no items to evaluate")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("item ids must be unique")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path, manifest_path = out / RESULTS_FILE, out / MANIFEST_FILE
    manifest: dict[str, Any] = {
        "data": data_name,
        "items": items_fingerprint(items),
        "n_items": len(items),
        "judge": _judge_settings(judge),
    }
    if fresh:
        results_path.unlink(missing_ok=True)
    elif manifest_path.is_file() and results_path.is_file():
        _check_manifest(manifest_path, manifest)
    manifest_path.write_text(json.dumps({**manifest, "info": dict(info or {})}, indent=2) + "\n", encoding="utf-8")

    done: dict[str, dict[str, Any]] = {}
    wanted = set(ids)
    for record in read_results(results_path, repair=True):
        rid = str(record["id"])
        if rid not in wanted:
            raise DataError(f"{results_path}: item {rid!r} is not in this run; use a new output folder or --fresh")
        done.setdefault(rid, record)  # a duplicate (should not happen) never counts twice
    resumed = len(done)
    if resumed:
        logger.info("resuming: %d of %d items already in %s", resumed, len(items), results_path)

    judged = 0
    started = time.monotonic()
    from tqdm import tqdm

    bar = tqdm(
        total=len(items), initial=resumed, disable=not progress, unit="item", file=sys.stderr, dynamic_ncols=True
    )
    try:
        with results_path.open("a", encoding="utf-8") as handle:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                missing = [item for item in chunk if item.id not in done]
                if not missing:
                    continue
                # The whole chunk, even if part of it is done: identical backend batches give identical results.
                results = judge.judge_batch([(item.prompt, item.candidates) for item in chunk])
                new = [_record(item, js, full) for item, js in zip(chunk, results, strict=True) if item.id not in done]
                _write_lines(handle, new)
                for record in new:
                    done[record["id"]] = record
                judged += len(new)
                bar.update(len(new))
    finally:
        bar.close()

    records = [done[i] for i in ids]
    if [str(r["id"]) for r in read_results(results_path)] != ids:
        # Resumed chunks may have been appended out of order: rewrite in data order, atomically.
        tmp = results_path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            _write_lines(handle, records)
        os.replace(tmp, results_path)

    from cerm.eval._report import write_outputs

    elapsed = time.monotonic() - started
    manifest_out = {**manifest, "info": dict(info or {}), "last_session": {"judged": judged, "seconds": elapsed}}
    manifest_path.write_text(json.dumps(manifest_out, indent=2) + "\n", encoding="utf-8")
    metrics, report, plot_files = write_outputs(
        records,
        out,
        data_name=data_name,
        judge_settings=manifest["judge"],
        tie_policy=tie_policy,
        unscorable_policy=unscorable_policy,
        plots=plots,
        info=info,
    )
    return EvalRun(out, records, metrics, report, plot_files, resumed, judged)
