"""The evaluation runner: judge items in fixed chunks, append per-item JSONL as it goes, resume after interruption.

Files in the output folder:

* ``run.json`` - what is being evaluated (data, item fingerprint, judge settings); a rerun into the same folder resumes
  only when these match, so results of different runs are never mixed;
* ``results.jsonl`` - one record per item, in data order once the run completes (see :mod:`cerm.eval._metrics`);
  every candidate keeps its status and score, so any policy or preset rule can be re-read with ``--report-only``;
* ``metrics.json``, ``report.md`` and the PNG plots, written at the end from ``results.jsonl`` alone.

Resuming. Items are judged in fixed chunks of ``batch_size`` items cut from the planned list, and a chunk's records are
written together and flushed to disk. A rerun reads ``results.jsonl`` (dropping a last line cut off by the kill), skips
complete chunks, and judges an incomplete chunk again as a whole, writing only its missing items. Re-judging the same
chunk keeps each backend batch identical to an uninterrupted run, so with greedy decoding the final results are the
same; nothing is lost and nothing is written twice.

Errors are not final. An item in which a candidate's judgment is ``ERROR`` (no judgment: the server was down, retries
ran out, out of memory) is written, so the report counts it, but a rerun judges it again and its new record replaces the
old one. The judge's own failures (``UNSCORABLE``) are results and are kept.

The manifest records the judge's settings and its backend's description (``Backend.describe()``: dtype, adapter,
revision, base URL without secrets...); a rerun with other settings is refused rather than mixing two judges' results.
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
from cerm._reward_judge import RewardJudge
from cerm._ties import TieBreak
from cerm._types import Judgment, TieBreakReport
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

    @property
    def errored_items(self) -> int:
        """Items with a judgment that errored (no judgment produced): counted in the report, judged again by a rerun."""
        return sum(1 for record in self.records if record_errored(record))


def items_fingerprint(items: Sequence[EvalItem]) -> str:
    """A hash of every item's id, prompt, candidates and labels: a resume must see exactly the same items."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.id, item.prompt, item.candidates, item.labels], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _judge_settings(judge: RewardJudge) -> dict[str, Any]:
    described = judge.describe()
    return {
        "model": judge.model_id,
        "backend": judge.backend_name,
        "config": _plain(described["config"]),
        "backend_settings": _plain(described["backend"]),
    }


def _plain(value: Any) -> Any:
    # JSON's own types, so that a manifest read back compares equal to the one just built (tuples become lists).
    return json.loads(json.dumps(value, default=str))


def record_errored(record: Mapping[str, Any]) -> bool:
    """True when a candidate of this record has no judgment because its generation failed (status ``error``)."""
    return any(c.get("status") == "error" for c in record.get("candidates", ()))


def _comparable_judge(settings: Any) -> Any:
    """Judge settings with default-valued config fields dropped, so that a setting added to JudgeConfig later (with a
    behaviour-preserving default) does not make an older run look different and block its resume."""
    if not isinstance(settings, Mapping) or not isinstance(settings.get("config"), Mapping):
        return settings
    defaults = {f.name: f.default for f in dataclasses.fields(JudgeConfig)}
    config = {k: v for k, v in settings["config"].items() if k not in defaults or v != defaults[k]}
    out = {**settings, "config": config}
    out.pop("backend_settings", None)  # compared on its own (a run recorded before it existed has none)
    return out


def _tie_entries(report: TieBreakReport) -> list[dict[str, Any]]:
    rank = {index: position for position, index in enumerate(report.order)}
    return [
        {
            "group": c.group,
            "key": c.key,
            "rank": rank[c.index],
            "contending": c.contending,
            "chains": c.chains,
            "added": c.added,
            "reason": c.reason,
        }
        for c in report.candidates
    ]


def _record(
    item: EvalItem, judgments: Sequence[Judgment], full: bool, report: TieBreakReport | None = None
) -> dict[str, Any]:
    candidates = []
    ties = _tie_entries(report) if report is not None else None
    for n, (text, label, style, judgment) in enumerate(
        zip(item.candidates, item.labels, item.styles, judgments, strict=True)
    ):
        cand: dict[str, Any] = {
            "label": label,
            "style": style,
            "chars": len(text),
            "status": judgment.status.value,
            "score": judgment.score,
            "reason": judgment.reason,
        }
        if ties is not None and report is not None:
            # The score stays the first judgment's (comparable with a run without tie-break); the tie-break's own
            # reading (the refined score over all chains, the key, the rank) is beside it.
            cand["score"] = report.candidates[n].first_score
            cand["tie_break"] = {**ties[n], "score": judgment.score}
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
    if report is not None:
        record["tie_break"] = {
            "rounds": report.rounds,
            "stopped": report.stopped,
            "generations": report.generations,
            "expected_used": report.expected_used,
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
    different = [k for k in ("data", "items", "n_items", "tie_break") if previous.get(k) != manifest.get(k)]
    if _comparable_judge(previous.get("judge")) != _comparable_judge(manifest.get("judge")):
        different.append("judge")
    before = (previous.get("judge") or {}).get("backend_settings")
    now = (manifest.get("judge") or {}).get("backend_settings")
    if before is not None and before != now:
        changed = sorted(k for k in set(before) | set(now or {}) if before.get(k) != (now or {}).get(k))
        different.append(f"backend settings ({', '.join(changed)})")
    if different:
        raise ConfigurationError(
            f"{path.parent} holds results of a different run (differs in: {', '.join(different)}); "
            "use a new output folder, or fresh=True / --fresh to discard them"
        )


def evaluate(
    judge: RewardJudge,
    items: Sequence[EvalItem],
    out_dir: str | os.PathLike[str],
    *,
    data_name: str | None = None,
    batch_size: int = 8,
    tie_policy: TiePolicy = "half",
    unscorable_policy: UnscorablePolicy = "wrong",
    plots: bool = True,
    full: bool = False,
    fresh: bool = False,
    progress: bool = True,
    info: Mapping[str, Any] | None = None,
    benchmark: str | None = None,
    rule: str | None = None,
    data_source: Mapping[str, Any] | None = None,
    tie_break: TieBreak | None = None,
) -> EvalRun:
    """Judge every item (all candidates of an item under one criteria set), write results as it goes, then the report.

    Args:
        judge: any cerm judge (:class:`cerm.RewardJudge`); items go through ``judge_batch``, ``batch_size`` at a time.
        items: from :func:`cerm.eval.load_items`.
        out_dir: output folder; rerunning into it resumes (see the module docs).
        data_name: how the data is named in the report and the manifest (default: the benchmark, else "custom").
        tie_policy, unscorable_policy: how ties and pairs without a verdict enter accuracy (see
            :mod:`cerm.eval._metrics`); both are stated in the report.
        plots: write PNG plots (needs matplotlib: ``pip install 'ce-rm[eval]'``).
        full: also store the prompt, criteria and evaluation texts in each record (large).
        fresh: discard results already in ``out_dir`` instead of resuming.
        progress: a tqdm bar with ETA on stderr.
        info: extra lines for the report's header (for example the slice's limit and seed).
        benchmark: a preset name (``"rewardbench2"``, ``"rm-bench"``, ...): the report opens with that benchmark's
            official figures (see :mod:`cerm.eval._presets`); ``rule`` picks one of the preset's rules.
        data_source: where the items came from (:attr:`BenchmarkData.provenance`: hub id, split, revision or path),
            recorded in the manifest and the report.
        tie_break: a :class:`~cerm.TieBreak` (off by default): candidates tied at the top of an item get more samples
            (see :meth:`cerm.Judge.best_of_n`); each candidate's record keeps its first score and adds a
            ``tie_break`` entry, and the pairwise and Best-of-N verdicts on tied candidates follow the tie-break
            (see :mod:`cerm.eval._metrics`). Recorded in the manifest: a resume never mixes runs with and without.

    An item whose judgment errored (no judgment produced) is written and counted, and judged again by a rerun.
    """
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    check_policies(tie_policy, unscorable_policy)
    if benchmark is not None:
        from cerm.eval._presets import SCORERS, preset_name

        benchmark = preset_name(benchmark)
        if rule is not None and rule not in SCORERS[benchmark][2]:
            raise ConfigurationError(f"{benchmark}: rule must be one of {SCORERS[benchmark][2]}, got {rule!r}")
    if data_name is None:
        data_name = benchmark or "custom"
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
    if tie_break is not None:
        manifest["tie_break"] = tie_break.to_dict()
    extra: dict[str, Any] = {"benchmark": benchmark, "rule": rule, "data_source": dict(data_source or {})}
    if fresh:
        results_path.unlink(missing_ok=True)
    elif manifest_path.is_file() and results_path.is_file():
        _check_manifest(manifest_path, manifest)
    manifest_path.write_text(
        json.dumps({**manifest, **extra, "info": dict(info or {})}, indent=2) + "\n", encoding="utf-8"
    )

    done: dict[str, dict[str, Any]] = {}
    errored: dict[str, dict[str, Any]] = {}  # written, but not final: judged again below
    wanted = set(ids)
    for record in read_results(results_path, repair=True):
        rid = str(record["id"])
        if rid not in wanted:
            raise DataError(f"{results_path}: item {rid!r} is not in this run; use a new output folder or --fresh")
        if record_errored(record):
            if rid not in done:
                errored[rid] = record
        else:
            done.setdefault(rid, record)  # a duplicate (an earlier errored try) never counts twice
            errored.pop(rid, None)
    resumed = len(done)
    if resumed or errored:
        logger.info(
            "resuming: %d of %d items already in %s; %d errored item(s) judged again",
            resumed,
            len(items),
            results_path,
            len(errored),
        )

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
                batch = [(item.prompt, item.candidates) for item in chunk]
                if tie_break is None:
                    results = judge.judge_batch(batch)
                    reports: list[TieBreakReport | None] = [None] * len(chunk)
                else:
                    decided = judge.decide_batch(batch, tie_break, scope="top")
                    results, reports = [js for js, _ in decided], [r for _, r in decided]
                new = [
                    _record(item, js, full, report)
                    for item, js, report in zip(chunk, results, reports, strict=True)
                    if item.id not in done
                ]
                _write_lines(handle, new)
                for record in new:
                    done[record["id"]] = record
                judged += len(new)
                errors = sum(1 for record in new if record_errored(record))
                if errors:
                    logger.warning("%d item(s) errored (no judgment produced); a rerun judges them again", errors)
                bar.update(len(new))
    finally:
        bar.close()

    records = [done[i] for i in ids]
    if [str(r["id"]) for r in read_results(results_path)] != ids:
        # (also after a rerun replaced errored records: the file then holds both tries, and keeps only the last)
        # Resumed chunks may have been appended out of order: rewrite in data order, atomically.
        tmp = results_path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            _write_lines(handle, records)
        os.replace(tmp, results_path)

    from cerm.eval._report import write_outputs

    elapsed = time.monotonic() - started
    manifest_out = {
        **manifest,
        **extra,
        "info": dict(info or {}),
        "last_session": {"judged": judged, "seconds": elapsed},
    }
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
        benchmark=benchmark,
        rule=rule,
        data_source=extra["data_source"],
    )
    return EvalRun(out, records, metrics, report, plot_files, resumed, judged)
