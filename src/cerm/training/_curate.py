"""Curation (SPEC section 2): keep the preference pairs a base judge is unsure about, then sample them for diversity.

1. **Uncertainty.** Each pair is judged by the base judge in the rollout shape: ``criteria_samples`` criteria sets
   (nc, default 4) and, under each, ``evaluation_samples`` evaluations (ne, default 2) of each response. Comparison
   (i, j) sets chosen's j-th evaluation under criteria i against rejected's j-th: nc x ne comparisons (8 by default).
   One :meth:`cerm.Judge.judge_batch` call does it: the judge runs with ``k = nc`` chains and each response is listed
   ne times, so every copy is evaluated (sampled, never de-duplicated) under the same nc criteria sets.

   The pair's **accuracy** is the share of comparisons in which chosen scores strictly higher. A tie is not a win.
   A comparison with an UNSCORABLE side is not a win either (``unscorable="loss"``, the default: a judge that cannot
   order the pair is uncertain about it), or is left out of the share (``unscorable="skip"``; a pair with no scorable
   comparison then has no accuracy and is not kept). A pair with any failed generation (``Status.ERROR``: outage,
   OOM) is *errored*: it gets no accuracy, is never counted, and is judged again when the run is resumed.

   Pairs with accuracy <= ``max_accuracy`` (0.6) are kept.
2. **Diversity.** The kept pairs are clustered by task type (:mod:`cerm.training._clusters`: ``source``, a
   backend-written ``label``, or k-means over sentence ``embedding``) and sampled, stratified over clusters, down to
   ``target_size``: ``"balanced"`` gives every cluster an equal share (small clusters give all they have and the rest
   is shared by the others), ``"proportional"`` keeps the clusters' proportions. Seeded.

Resuming works like ``cerm eval``: per-pair judgments are appended to ``judgments.jsonl`` and flushed chunk by chunk
(``run.json`` pins the data and judge settings); a rerun into the same folder skips the pairs already judged and
judges the rest (errored pairs included). The output folder then holds ``pairs.jsonl`` (the selection, which
``teach`` and :func:`load_pairs` read directly), ``curation.jsonl`` (every pair's accuracy, cluster and fate),
``report.md`` with ``accuracy.png`` and ``clusters.png``, and ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cerm._errors import ConfigurationError
from cerm.training._clusters import TASK_LABELS, ClusterMethod
from cerm.training._load import Schema
from cerm.training._manifest import write_manifest
from cerm.training._pairs import PreferencePair, check_unique_ids, pairs_digest, write_pairs

if TYPE_CHECKING:
    from cerm._judge import Judge
    from cerm._types import Judgment
    from cerm.backends import Backend

logger = logging.getLogger("cerm")

JUDGMENTS_FILE = "judgments.jsonl"
RUN_FILE = "run.json"
CURATION_FILE = "curation.jsonl"
PAIRS_FILE = "pairs.jsonl"


@dataclass
class CurateConfig:
    """Settings of :func:`curate` (plain values: ``CurateConfig(**yaml.safe_load(f))`` works).

    Data: ``data`` (a file, a folder, a hub id: see :func:`cerm.training.load_pairs`; required unless :func:`curate`
    is given the pairs), ``data_split``, ``data_schema``, ``limit`` (first pairs only).

    Base judge: ``judge_model`` on ``judge_backend`` (``judge_backend_kwargs`` go to the backend), with
    ``temperature`` and the two token budgets. Uncertainty: ``criteria_samples`` x ``evaluation_samples``
    comparisons per pair (the rollout shape, 4 x 2), ``unscorable`` (``"loss"`` or ``"skip"``, see the module
    docstring), ``max_accuracy`` (keep pairs at or below it), ``batch_size`` pairs per backend call.

    Diversity: ``cluster`` (``"source"``, ``"label"``, ``"embedding"``), ``labels`` (for ``"label"``),
    ``embedding_model`` and ``n_clusters`` (for ``"embedding"``), ``target_size`` (None: keep every uncertain pair),
    ``stratify`` (``"balanced"`` or ``"proportional"``). ``seed`` seeds the judge's sampling and the selection.
    ``fresh``: discard earlier judgments in ``output_dir`` instead of resuming.
    """

    output_dir: str
    data: str | None = None
    data_split: str | None = None
    data_schema: Schema = "auto"
    limit: int | None = None
    judge_model: str = "demo"
    judge_backend: str = "hf"
    judge_backend_kwargs: dict[str, Any] = field(default_factory=dict)
    temperature: float = 0.7
    criteria_max_new_tokens: int = 1024
    evaluation_max_new_tokens: int = 2048
    criteria_samples: int = 4
    evaluation_samples: int = 2
    unscorable: Literal["loss", "skip"] = "loss"
    max_accuracy: float = 0.6
    batch_size: int = 8
    cluster: ClusterMethod = "source"
    labels: list[str] = field(default_factory=lambda: list(TASK_LABELS))
    embedding_model: str = "all-MiniLM-L6-v2"
    n_clusters: int = 8
    target_size: int | None = None
    stratify: Literal["balanced", "proportional"] = "balanced"
    seed: int = 0
    fresh: bool = False

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ConfigurationError("CurateConfig.output_dir is required")
        for name in ("criteria_samples", "evaluation_samples", "batch_size", "n_clusters", "criteria_max_new_tokens",
                     "evaluation_max_new_tokens"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigurationError(f"CurateConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigurationError(f"CurateConfig.limit must be >= 1, got {self.limit}")
        if self.target_size is not None and self.target_size < 1:
            raise ConfigurationError(f"CurateConfig.target_size must be >= 1, got {self.target_size}")
        if not 0.0 <= self.max_accuracy <= 1.0:
            raise ConfigurationError(f"CurateConfig.max_accuracy must be in [0, 1], got {self.max_accuracy}")
        if self.unscorable not in ("loss", "skip"):
            raise ConfigurationError(f"CurateConfig.unscorable must be 'loss' or 'skip', got {self.unscorable!r}")
        if self.cluster not in ("source", "label", "embedding"):
            raise ConfigurationError(
                f"CurateConfig.cluster must be 'source', 'label' or 'embedding', got {self.cluster!r}"
            )
        if self.stratify not in ("balanced", "proportional"):
            raise ConfigurationError(
                f"CurateConfig.stratify must be 'balanced' or 'proportional', got {self.stratify!r}"
            )
        if self.temperature < 0:
            raise ConfigurationError(f"CurateConfig.temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and (self.criteria_samples > 1 or self.evaluation_samples > 1):
            raise ConfigurationError("several criteria or evaluation samples need temperature > 0")
        if self.cluster == "label" and not self.labels:
            raise ConfigurationError("CurateConfig.labels must not be empty for cluster='label'")

    @property
    def comparisons(self) -> int:
        return self.criteria_samples * self.evaluation_samples

    def judge_config(self) -> Any:
        """The base judge's :class:`cerm.JudgeConfig`: k = ``criteria_samples`` chains."""
        from cerm._config import JudgeConfig

        return JudgeConfig(
            criteria_max_new_tokens=self.criteria_max_new_tokens,
            evaluation_max_new_tokens=self.evaluation_max_new_tokens,
            temperature=self.temperature,
            k=self.criteria_samples,
            scaling="chains",
            seed=self.seed,
        )


# -- uncertainty --------------------------------------------------------------------------------------------------
def judgment_record(pair: PreferencePair, judgments: Sequence[Judgment], config: CurateConfig) -> dict[str, Any]:
    """One pair's comparisons from the judgments of its 2 x ne response copies (chosen copies first)."""
    ne, nc = config.evaluation_samples, config.criteria_samples
    chosen, rejected = judgments[:ne], judgments[ne:]
    failed = [j for j in judgments if j.errored or any(c.failed for c in j.chains)]
    if failed:
        return {"id": pair.id, "status": "error", "reason": failed[0].reason or "a generation failed"}
    outcomes: Counter[str] = Counter()
    scores: list[list[float | None]] = []
    for i in range(nc):
        for j in range(ne):
            c = _chain_score(chosen[j], i)
            r = _chain_score(rejected[j], i)
            scores.append([c, r])
            if c is None or r is None:
                outcomes["unscorable"] += 1
            elif c > r:
                outcomes["wins"] += 1
            elif c == r:
                outcomes["ties"] += 1
            else:
                outcomes["losses"] += 1
    counted = nc * ne - (outcomes["unscorable"] if config.unscorable == "skip" else 0)
    return {
        "id": pair.id,
        "status": "ok",
        "comparisons": nc * ne,
        "wins": outcomes["wins"],
        "ties": outcomes["ties"],
        "losses": outcomes["losses"],
        "unscorable": outcomes["unscorable"],
        "accuracy": outcomes["wins"] / counted if counted else None,
        "scores": scores,
    }


def _chain_score(judgment: Judgment, index: int) -> float | None:
    if index >= len(judgment.chains):  # no chains at all: the Judge refused the response (UNSCORABLE)
        return None
    return judgment.chains[index].score


def _run_manifest(pairs: Sequence[PreferencePair], judge: Judge, config: CurateConfig) -> dict[str, Any]:
    return {
        "data": pairs_digest(pairs),
        "n_pairs": len(pairs),
        "judge": {
            "model": judge.backend.model_id,
            "backend": judge.backend.name,
            "config": dataclasses.asdict(judge.config),
        },
        "shape": [config.criteria_samples, config.evaluation_samples],
        "unscorable": config.unscorable,
    }


def _prepare_run(out_dir: Path, manifest: Mapping[str, Any], fresh: bool) -> None:
    run_path, judgments_path = out_dir / RUN_FILE, out_dir / JUDGMENTS_FILE
    if fresh:
        judgments_path.unlink(missing_ok=True)
    elif run_path.is_file():
        previous = json.loads(run_path.read_text(encoding="utf-8"))
        different = [k for k in manifest if previous.get(k) != manifest[k]]
        if different:
            raise ConfigurationError(
                f"{out_dir} holds judgments of a different curation run (differs in: {', '.join(different)}); use a "
                "new output_dir, or fresh=True to discard them"
            )
    elif judgments_path.exists():
        raise ConfigurationError(f"{judgments_path} exists without {RUN_FILE}; use a new output_dir or fresh=True")
    run_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def judge_uncertainty(
    pairs: Sequence[PreferencePair], judge: Judge, config: CurateConfig, out_dir: Path
) -> dict[str, dict[str, Any]]:
    """Judge every pair not judged yet (resuming from ``judgments.jsonl``); returns the latest record per pair id."""
    from cerm.eval._runner import _write_lines, read_results

    path = out_dir / JUDGMENTS_FILE
    records: dict[str, dict[str, Any]] = {}
    for record in read_results(path, repair=True, required=("id", "status")):
        if records.get(record["id"], {}).get("status") != "ok":  # an ok record is final; a later error cannot undo it
            records[record["id"]] = record
    done = {pid for pid, r in records.items() if r["status"] == "ok"}
    todo = [pair for pair in pairs if pair.id not in done]
    if done:
        logger.info("curate: resuming, %d of %d pairs already judged in %s", len(pairs) - len(todo), len(pairs), path)
    ne = config.evaluation_samples
    with path.open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start : start + config.batch_size]
            results = judge.judge_batch([(p.prompt, [p.chosen] * ne + [p.rejected] * ne) for p in chunk])
            new = [judgment_record(p, js, config) for p, js in zip(chunk, results, strict=True)]
            _write_lines(handle, new)
            for record in new:
                records[record["id"]] = record
            logger.info("curate: judged %d of %d pairs", len(pairs) - len(todo) + start + len(chunk), len(pairs))
    return records


# -- diversity ----------------------------------------------------------------------------------------------------
def allocate(sizes: Mapping[str, int], target: int, mode: Literal["balanced", "proportional"]) -> dict[str, int]:
    """How many pairs each cluster gives to reach ``target`` (never more than it has)."""
    total = sum(sizes.values())
    if target >= total:
        return dict(sizes)
    names = sorted(sizes)
    if mode == "proportional":
        exact = {c: sizes[c] * target / total for c in names}
        alloc = {c: int(exact[c]) for c in names}
        short = target - sum(alloc.values())
        for c in sorted(names, key=lambda c: (-(exact[c] - alloc[c]), c))[:short]:  # largest remainders
            alloc[c] += 1
        return alloc
    alloc = dict.fromkeys(names, 0)
    remaining = target
    open_ = [c for c in names if sizes[c] > 0]
    while remaining > 0 and open_:
        share = remaining // len(open_)
        if share == 0:  # fewer pairs left to give than open clusters: one each, largest clusters first
            for c in sorted(open_, key=lambda c: (-(sizes[c] - alloc[c]), c))[:remaining]:
                alloc[c] += 1
            break
        for c in open_:
            give = min(share, sizes[c] - alloc[c])
            alloc[c] += give
            remaining -= give
        open_ = [c for c in open_ if sizes[c] > alloc[c]]
    return alloc


def stratified_sample(
    clusters: Sequence[str], target: int | None, mode: Literal["balanced", "proportional"], seed: int
) -> list[int]:
    """Indices (in data order) of a stratified, seeded sample of ``target`` items over ``clusters``."""
    if target is None or target >= len(clusters):
        return list(range(len(clusters)))
    members: dict[str, list[int]] = {}
    for index, cluster in enumerate(clusters):
        members.setdefault(cluster, []).append(index)
    quota = allocate({c: len(m) for c, m in members.items()}, target, mode)
    chosen: list[int] = []
    for cluster, indices in members.items():
        chosen.extend(random.Random(f"cerm-curate:{seed}:{cluster}").sample(indices, quota[cluster]))
    return sorted(chosen)


def assign_clusters(pairs: Sequence[PreferencePair], config: CurateConfig, backend: Backend | None) -> list[str]:
    """The task-type cluster of each pair, by ``config.cluster``."""
    from cerm.training import _clusters

    if not pairs:
        return []
    if config.cluster == "source":
        return _clusters.source_clusters(pairs)
    if config.cluster == "label":
        if backend is None:
            raise ConfigurationError("cluster='label' needs a backend")
        return _clusters.label_clusters(pairs, backend, labels=config.labels, batch_size=config.batch_size)
    return _clusters.embedding_clusters(
        pairs, model=config.embedding_model, n_clusters=config.n_clusters, seed=config.seed
    )


# -- the stage -------------------------------------------------------------------------------------------------------
def curate(
    config: CurateConfig, *, backend: Backend | None = None, pairs: Sequence[PreferencePair] | None = None
) -> Path:
    """Run curation into ``config.output_dir`` (see the module docstring) and return that folder.

    ``backend`` overrides the base judge's backend (``judge_model`` / ``judge_backend`` are then not loaded);
    ``pairs`` overrides ``config.data``.
    """
    from cerm._judge import Judge
    from cerm.training._curate_report import write_report
    from cerm.training._load import load_pairs

    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if pairs is None:
        if not config.data:
            raise ConfigurationError("curate: set CurateConfig.data (or pass pairs)")
        pairs = load_pairs(config.data, split=config.data_split, schema=config.data_schema, limit=config.limit)
    pairs = list(pairs)
    check_unique_ids(pairs, "curation data")
    judge = (
        Judge(backend, config=config.judge_config())
        if backend is not None
        else Judge(config.judge_model, backend=config.judge_backend, config=config.judge_config(),
                   **config.judge_backend_kwargs)
    )  # fmt: skip
    try:
        _prepare_run(out_dir, _run_manifest(pairs, judge, config), config.fresh)
        records = judge_uncertainty(pairs, judge, config, out_dir)
        kept = [
            p for p in pairs
            if records[p.id]["status"] == "ok" and records[p.id]["accuracy"] is not None
            and records[p.id]["accuracy"] <= config.max_accuracy
        ]  # fmt: skip
        clusters = assign_clusters(kept, config, judge.backend)
    finally:
        judge.close()
    selected_idx = stratified_sample(clusters, config.target_size, config.stratify, config.seed)
    cluster_of = {p.id: c for p, c in zip(kept, clusters, strict=True)}
    selected_ids = {kept[i].id for i in selected_idx}
    selection = [
        dataclasses.replace(
            kept[i],
            meta={**kept[i].meta, "curation": {"accuracy": records[kept[i].id]["accuracy"], "cluster": clusters[i]}},
        )
        for i in selected_idx
    ]
    write_pairs(selection, out_dir / PAIRS_FILE)
    rows = []
    with (out_dir / CURATION_FILE).open("w", encoding="utf-8") as handle:
        for pair in pairs:
            record = records[pair.id]
            row = {
                "id": pair.id,
                "source": pair.source,
                "status": record["status"],
                "accuracy": record.get("accuracy"),
                "kept": pair.id in cluster_of,
                "cluster": cluster_of.get(pair.id),
                "selected": pair.id in selected_ids,
            }
            rows.append(row)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    errored = sum(1 for r in rows if r["status"] == "error")
    if errored:
        logger.warning("curate: %d pairs errored (failed generations); rerun into %s to retry them", errored, out_dir)
    stats = {
        "pairs": len(pairs),
        "judged": len(pairs) - errored,
        "errored": errored,
        "unscored": sum(1 for r in rows if r["status"] == "ok" and r["accuracy"] is None),
        "kept": len(kept),
        "selected": len(selection),
        "comparisons_per_pair": config.comparisons,
        "accuracy_histogram": accuracy_histogram(rows),
        "clusters": cluster_table(rows),
    }
    outputs = [PAIRS_FILE, CURATION_FILE, JUDGMENTS_FILE, *write_report(out_dir, rows, stats, config)]
    write_manifest(out_dir, stage="curate", config=config, inputs={"pairs": pairs_digest(pairs)}, outputs=outputs,
                   stats=stats)  # fmt: skip
    logger.info(
        "curate: %d pairs judged (%d errored), %d with accuracy <= %g, %d selected -> %s",
        len(pairs) - errored, errored, len(kept), config.max_accuracy, len(selection), out_dir,
    )  # fmt: skip
    return out_dir


def accuracy_histogram(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Pairs per accuracy value (rounded to 3 decimals), in increasing order; unscored pairs under ``"none"``."""
    counts: Counter[str] = Counter()
    for row in rows:
        if row["status"] != "ok":
            continue
        counts["none" if row["accuracy"] is None else f"{row['accuracy']:.3f}"] += 1
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] == "none", kv[0])))


def cluster_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per cluster of the kept pairs: kept, selected, and their mean accuracy; largest first."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not row["kept"]:
            continue
        entry = table.setdefault(row["cluster"], {"cluster": row["cluster"], "kept": 0, "selected": 0, "acc": 0.0})
        entry["kept"] += 1
        entry["selected"] += int(row["selected"])
        entry["acc"] += row["accuracy"]
    out = [
        {"cluster": e["cluster"], "kept": e["kept"], "selected": e["selected"],
         "mean_accuracy": round(e["acc"] / e["kept"], 4)}
        for e in table.values()
    ]  # fmt: skip
    return sorted(out, key=lambda e: (-e["kept"], e["cluster"]))
