"""Scoring a Ray Dataset on a whole cluster: the criteria stage, then the evaluation stage, as two Ray Data stages.

Install with ``pip install 'ce-rm[ray]'``.

>>> ds = ray.data.read_json("s3://bucket/pairs/")                         # doctest: +SKIP
>>> scored = score_dataset(ds, functools.partial(Judge, "judge", backend="openai", base_urls=URLS))  # doctest: +SKIP
>>> scored.write_parquet("s3://bucket/scored/")                           # doctest: +SKIP

Design, and why:

* Rows are ``(query, response)`` pairs plus any other columns (kept). Stage 1 groups the rows by query
  (``groupby("query").map_groups``) so each query gets exactly one criteria set, however its rows are spread over the
  input; stage 2 evaluates the rows in batches (``map_batches``). Both stages run on actor pools (``concurrency``), so
  each actor builds its :class:`cerm.Judge` once (``make_judge``: a GPU engine on GPU actors, or an
  OpenAI-compatible endpoint pool) and reuses it for every group or batch it gets.
* The criteria travel between the stages as the criteria cache entry the Judge itself wrote (its digest and the
  generation), and stage 2's Judge reads them from a cache filled per batch: the Judge stays the only place that
  knows the two-stage order, builds the prompts and parses the texts. A criteria generation that failed is not passed
  on (failures are never cached), so stage 2's Judge generates it again: a second chance, not a lost item.
* Fault tolerance is Ray's: Ray Data restarts a dead actor and retries its task (``max_restarts`` /
  ``max_task_retries`` of the actor pool), and a retried batch is judged again whole, so the output has each input
  row exactly once. Writing is Ray's too (``write_json``, ``write_parquet``, ...).
* Output columns added to every row: ``score`` (float, or null when not scored), ``status`` (``scored``,
  ``unscorable`` or ``error``), ``reason`` and ``criteria`` (the criteria text; ``--full``-style detail stays in
  cerm's own surfaces).

* Room for Ray Data's own tasks: the two actor pools hold their CPUs for the whole run, and the shuffle that groups
  rows by query runs as ordinary tasks that need a CPU too. Pools that take every CPU of the cluster leave the shuffle
  waiting forever (a hang, not an error), so the runner refuses such a plan up front and says what to change: a
  fraction of a CPU per actor for endpoint-pool clients (``actor_options={"num_cpus": 0.25}``), fewer actors, or a
  bigger cluster (``check_resources=False`` for an autoscaling cluster that will grow).

One criteria set per query (``JudgeConfig.criteria_sets == 1``); several evaluations per set
(``evaluation_samples``) are fine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from cerm._cache import CriteriaCache, CriteriaCacheKey
from cerm._errors import BackendUnavailableError, ConfigurationError
from cerm._judge import Judge
from cerm.backends._base import Completion

logger = logging.getLogger("cerm")

#: Columns the runner adds; an input that already has one of them is refused (it would be overwritten).
OUTPUT_COLUMNS = ("score", "status", "reason", "criteria")
_CARRIED = "_cerm_criteria"  # stage 1 -> stage 2: the criteria cache entry, JSON


def _import_ray() -> Any:
    try:
        import ray.data
    except ImportError as exc:
        raise BackendUnavailableError("the Ray runner needs Ray Data: pip install 'ce-rm[ray]'") from exc
    return ray


class _HandOver(CriteriaCache):
    """Stage 1: records the criteria generations the Judge stores. Stage 2: serves the batch's criteria to the Judge.

    One per actor, used by one thread at a time (an actor runs one task at a time).
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, Completion] = {}
        self.written: dict[str, tuple[str, Completion]] = {}  # query -> (digest, generation)

    def _get(self, digest: str) -> Completion | None:
        return self.entries.get(digest)

    def _put(self, key: CriteriaCacheKey, value: Completion) -> None:
        digest = key.digest()
        self.entries[digest] = value
        self.written[key.query] = (digest, value)

    def clear(self) -> None:
        self.entries.clear()
        self.written.clear()

    def __len__(self) -> int:
        return len(self.entries)


def _encode(digest: str, completion: Completion) -> str:
    return json.dumps(
        {
            "digest": digest,
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        },
        ensure_ascii=False,
    )


def _decode(carried: str) -> tuple[str, Completion] | None:
    if not carried:
        return None
    data = json.loads(carried)
    completion = Completion(data["text"], data["finish_reason"], data["prompt_tokens"], data["completion_tokens"])
    return data["digest"], completion


def _judge_with_cache(make_judge: Callable[[], Judge], cache: _HandOver) -> Judge:
    judge = make_judge()
    if not isinstance(judge, Judge):
        raise ConfigurationError(f"make_judge must return a cerm.Judge, got {type(judge).__name__}")
    if judge.config.criteria_sets != 1:
        raise ConfigurationError(
            "the Ray runner hands one criteria set per query from stage 1 to stage 2: use a config with "
            f"criteria_sets == 1 (got {judge.config.criteria_sets}); evaluation_samples > 1 is fine"
        )
    if judge.cache is not None:
        raise ConfigurationError("make_judge's Judge has its own criteria cache: leave it out, the runner sets one")
    judge.cache = cache
    return judge


class _CriteriaStage:
    """An actor of stage 1: one criteria generation per query group."""

    def __init__(self, make_judge: Callable[[], Judge]) -> None:
        self.cache = _HandOver()
        self.judge = _judge_with_cache(make_judge, self.cache)

    def __call__(self, group: Any) -> Any:
        import pyarrow as pa

        query = str(group.column("query")[0].as_py())
        self.cache.clear()
        criteria = self.judge.criteria(query)
        written = self.cache.written.get(query)
        if written is None:  # the generation failed: stage 2's Judge generates it again
            logger.warning("a criteria generation failed (%s); the evaluation stage tries again", criteria.problem)
        carried = "" if written is None else _encode(*written)
        return group.append_column(_CARRIED, pa.array([carried] * group.num_rows, type=pa.string()))


class _EvaluationStage:
    """An actor of stage 2: the evaluations of a batch of rows, under the criteria stage 1 produced."""

    def __init__(self, make_judge: Callable[[], Judge]) -> None:
        self.cache = _HandOver()
        self.judge = _judge_with_cache(make_judge, self.cache)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        self.cache.clear()
        for carried in batch.column(_CARRIED).to_pylist():
            entry = _decode(carried or "")
            if entry is not None:
                self.cache.entries[entry[0]] = entry[1]
        # The rows of one query are judged together: one (query, responses) item per query of the batch.
        queries = [str(q) for q in batch.column("query").to_pylist()]
        responses = [str(r) for r in batch.column("response").to_pylist()]
        order: dict[str, list[int]] = {}
        for row, query in enumerate(queries):
            order.setdefault(query, []).append(row)
        items = [(query, [responses[row] for row in rows]) for query, rows in order.items()]
        size = batch.num_rows
        scores: list[float | None] = [None] * size
        statuses: list[str] = [""] * size
        reasons: list[str | None] = [None] * size
        criteria: list[str | None] = [None] * size
        for rows, judgments in zip(order.values(), self.judge.judge_batch(items), strict=True):
            for row, judgment in zip(rows, judgments, strict=True):
                scores[row] = judgment.score
                statuses[row] = judgment.status.value
                reasons[row] = judgment.reason
                criteria[row] = judgment.criteria.text if judgment.criteria is not None else None
        out = batch.drop_columns([_CARRIED])
        for name, values, kind in (
            ("score", scores, pa.float64()),  # null when not scored: UNSCORABLE and ERROR are never numbers
            ("status", statuses, pa.string()),
            ("reason", reasons, pa.string()),
            ("criteria", criteria, pa.string()),
        ):
            out = out.append_column(name, pa.array(values, type=kind))
        return out


def _fewest_actors(concurrency: int | tuple[int, ...], stage: str) -> int:
    """The actors a pool starts with: an int, or the first of Ray's ``(min, max)`` / ``(min, max, initial)``."""
    fewest = concurrency if isinstance(concurrency, int) else concurrency[0]
    if fewest < 1:
        raise ConfigurationError(f"{stage}_concurrency must start at least one actor, got {concurrency!r}")
    return fewest


def _check_room(ray: Any, actors: int, options: Mapping[str, Any]) -> None:
    """Refuse pools that leave no CPU for Ray Data's shuffle and read tasks (they would wait forever)."""
    if not ray.is_initialized():  # building a dataset starts Ray; without it there is no cluster to read yet
        return
    per_actor = float(options.get("num_cpus", 1.0))  # Ray Data's default: one CPU per actor
    held = actors * per_actor
    total = float(ray.cluster_resources().get("CPU", 0.0))
    if total - held < 1.0:
        raise ConfigurationError(
            f"the two actor pools hold {held:g} of the cluster's {total:g} CPUs ({actors} actors x {per_actor:g}), "
            "leaving less than one for Ray Data's shuffle and read tasks, so the run would wait forever. Give "
            "endpoint-pool clients a fraction of a CPU (actor_options={'num_cpus': 0.25}), use fewer actors, or "
            "pass check_resources=False on an autoscaling cluster that will add CPUs"
        )


def score_dataset(
    dataset: Any,
    make_judge: Callable[[], Judge],
    *,
    criteria_concurrency: int | tuple[int, ...] = 1,
    evaluation_concurrency: int | tuple[int, ...] = 1,
    batch_size: int = 64,
    actor_options: Mapping[str, Any] | None = None,
    shuffle_partitions: int | None = None,
    check_resources: bool = True,
) -> Any:
    """Add ``score``, ``status``, ``reason`` and ``criteria`` columns to a Ray Dataset of ``query``/``response`` rows.

    Args:
        dataset: a ``ray.data.Dataset`` with string columns ``query`` and ``response`` (other columns are kept).
        make_judge: builds each actor's :class:`cerm.Judge` (called once per actor, on the actor; must be picklable,
            e.g. ``functools.partial(Judge, "PKU-ONELab/CE-RM-4B", backend="vllm", config=...)``). No criteria cache:
            the runner gives the Judge its own.
        criteria_concurrency, evaluation_concurrency: actors in each stage's pool (an int, or Ray's ``(min, max)``
            autoscaling range).
        batch_size: rows per evaluation batch (one ``judge_batch`` call; its queries' rows are judged together).
        actor_options: Ray resources and options for both pools' actors, e.g. ``{"num_gpus": 1}`` for vLLM engines,
            ``{"num_cpus": 0.25}`` for endpoint-pool clients, or ``{"max_restarts": 0}`` to fail instead of restart.
        shuffle_partitions: partitions of the group-by-query shuffle (None: Ray's default, 200); a small dataset
            runs faster with a few.
        check_resources: refuse, before anything runs, actor pools that leave the cluster less than one CPU for
            Ray Data's own tasks (a run that would hang). Turn off on an autoscaling cluster that will add CPUs.

    Returns the lazy output dataset: write it with Ray's writers (``write_json``, ``write_parquet``) or iterate it.
    """
    ray = _import_ray()
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    columns = set(dataset.columns() or ())
    missing = {"query", "response"} - columns
    if missing:
        raise ConfigurationError(f"the dataset needs the columns query and response; it has no {sorted(missing)}")
    taken = sorted((columns & set(OUTPUT_COLUMNS)) | (columns & {_CARRIED}))
    if taken:
        raise ConfigurationError(f"the dataset already has the output column(s) {taken}; rename them first")
    if shuffle_partitions is not None and shuffle_partitions < 1:
        raise ConfigurationError(f"shuffle_partitions must be >= 1, got {shuffle_partitions}")
    options = dict(actor_options or {})
    actors = _fewest_actors(criteria_concurrency, "criteria") + _fewest_actors(evaluation_concurrency, "evaluation")
    if check_resources:
        _check_room(ray, actors, options)
    with_criteria = dataset.groupby("query", num_partitions=shuffle_partitions).map_groups(
        _CriteriaStage,
        fn_constructor_args=(make_judge,),
        concurrency=criteria_concurrency,
        batch_format="pyarrow",
        **options,
    )
    return with_criteria.map_batches(
        _EvaluationStage,
        fn_constructor_args=(make_judge,),
        concurrency=evaluation_concurrency,
        batch_size=batch_size,
        batch_format="pyarrow",
        **options,
    )
