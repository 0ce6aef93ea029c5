"""Cold-start SFT targets (SPEC section 2): a teacher writes criteria and evaluation turns for preference pairs, and
rejection sampling keeps only the drafts whose format is valid and whose scores put chosen strictly above rejected.

Teachers plug in through the small :class:`Teacher` protocol: :class:`JudgeTeacher` wraps any :class:`cerm.Judge`
(any backend; it uses the Judge's public ``judge_batch`` with the exact inference prompts), and
:class:`~cerm.training.ProgrammaticTeacher` writes correct turns for generated checkable and open-ended pairs.

The output of :func:`teach` is a directory:

* ``trajectories.jsonl``: one line per SFT example, ``{"pair_id", "query", "response", "role": "chosen" |
  "rejected", "criteria", "evaluation", "score", "teacher"}``. Both responses of an accepted draft share its one
  criteria text. :meth:`Trajectory.conversation` gives the 4-message SFT conversation
  ``evaluation_conversation(query, criteria, response) + [{"role": "assistant", "content": evaluation}]``.
* ``pairs.jsonl``: the pairs that were taught (every input pair, accepted or not);
* ``teach_log.jsonl``: per pair, the drafts tried, accepted and why others were rejected;
* ``manifest.json``: the config, the input pairs' hash, output hashes and the counts (acceptance rate included).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from cerm._errors import ConfigurationError
from cerm._jsonl import iter_json_lines
from cerm.protocol import Conversation, evaluation_conversation, parse_criteria, parse_evaluation
from cerm.training._load import Schema
from cerm.training._manifest import write_manifest
from cerm.training._pairs import PairError, PreferencePair, check_unique_ids, pairs_digest, write_pairs

if TYPE_CHECKING:  # the Judge is imported lazily: cerm.training stays light until a judge teacher runs
    from cerm._judge import Judge
    from cerm._types import Chain

logger = logging.getLogger("cerm")

TRAJECTORIES_FILE = "trajectories.jsonl"
PAIRS_FILE = "pairs.jsonl"
TEACH_LOG_FILE = "teach_log.jsonl"

Role = Literal["chosen", "rejected"]


@dataclass(frozen=True)
class Trajectory:
    """One SFT example: the criteria turn and the evaluation turn a teacher wrote for one response of a pair."""

    pair_id: str
    query: str
    response: str
    role: Role
    criteria: str
    evaluation: str
    score: float
    teacher: str

    def conversation(self) -> Conversation:
        """The 4-message SFT conversation, rendered by the protocol's own functions (the inference prompts)."""
        return [
            *evaluation_conversation(self.query, self.criteria, self.response),
            {"role": "assistant", "content": self.evaluation},
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pair_id": self.pair_id,
            "query": self.query,
            "response": self.response,
            "role": self.role,
            "criteria": self.criteria,
            "evaluation": self.evaluation,
            "score": self.score,
            "teacher": self.teacher,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "trajectory") -> Trajectory:
        if not isinstance(data, Mapping):
            raise PairError(f"{where}: expected a JSON object")
        for key in ("pair_id", "query", "response", "criteria", "evaluation", "teacher"):
            if not isinstance(data.get(key), str):
                raise PairError(f"{where}: {key!r} must be a string")
        if data.get("role") not in ("chosen", "rejected"):
            raise PairError(f"{where}: 'role' must be 'chosen' or 'rejected'")
        score = data.get("score")
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise PairError(f"{where}: 'score' must be a number")
        return cls(
            pair_id=data["pair_id"],
            query=data["query"],
            response=data["response"],
            role=data["role"],
            criteria=data["criteria"],
            evaluation=data["evaluation"],
            score=float(score),
            teacher=data["teacher"],
        )


def write_trajectories(trajectories: Iterable[Trajectory], path: str | Path) -> Path:
    """Write trajectories as JSONL (one :meth:`Trajectory.to_dict` per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for trajectory in trajectories:
            handle.write(json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n")
    return path


def read_trajectories(source: str | Path) -> list[Trajectory]:
    """Read ``trajectories.jsonl``, given the file or a :func:`teach` output directory."""
    path = Path(source)
    if path.is_dir():
        path = path / TRAJECTORIES_FILE
    with path.open(encoding="utf-8") as handle:
        return [Trajectory.from_dict(obj, where) for where, obj in iter_json_lines(handle, str(path), PairError)]


@dataclass(frozen=True)
class TeacherDraft:
    """One teacher attempt on a pair: a criteria turn and an evaluation of each response under it.

    ``error`` is set (and the texts may be empty) when a generation failed: no draft was written, so it is neither
    accepted nor counted as a rejection. ``problem`` is set when the teacher itself found the draft unusable although
    it was written (e.g. an evaluation cut off at the token budget, which a parser alone cannot tell): it is
    rejected as ``"unscorable"``.
    """

    criteria: str
    chosen_evaluation: str
    rejected_evaluation: str
    error: str | None = None
    problem: str | None = None


@runtime_checkable
class Teacher(Protocol):
    """Anything that writes drafts: ``drafts(pairs, attempt)`` returns, for each pair in order, a list of drafts
    (empty when the teacher cannot teach that pair). ``attempt`` counts from 0; a sampling teacher should give new
    drafts on each attempt."""

    @property
    def name(self) -> str: ...

    def drafts(self, pairs: Sequence[PreferencePair], attempt: int) -> list[list[TeacherDraft]]: ...


@dataclass(frozen=True)
class DraftVerdict:
    """The acceptance check of one draft: the parsed overall scores and, when rejected, why."""

    accepted: bool
    chosen_score: float | None
    rejected_score: float | None
    reason: str | None


def check_draft(draft: TeacherDraft, *, strict_format: bool = True) -> DraftVerdict:
    """Accept a draft when its criteria turn is well formed (markers and at least one criterion), both evaluations
    give a valid overall score, and chosen's is strictly higher. The texts are read with the protocol's own parsers.

    With ``strict_format`` an evaluation must also have no parser warnings (one score per criterion, each in 0-5).
    """
    if draft.error is not None:
        return DraftVerdict(False, None, None, "error")
    if draft.problem is not None:
        return DraftVerdict(False, None, None, "unscorable")
    criteria = parse_criteria(draft.criteria)
    if not criteria.well_formed:
        return DraftVerdict(False, None, None, "criteria_format")
    chosen = parse_evaluation(draft.chosen_evaluation, criteria)
    rejected = parse_evaluation(draft.rejected_evaluation, criteria)
    if chosen.overall is None or rejected.overall is None:
        return DraftVerdict(False, chosen.overall, rejected.overall, "evaluation_format")
    if strict_format and (chosen.warnings or rejected.warnings):
        return DraftVerdict(False, chosen.overall, rejected.overall, "evaluation_warnings")
    if chosen.overall <= rejected.overall:
        reason = "tie" if chosen.overall == rejected.overall else "wrong_order"
        return DraftVerdict(False, chosen.overall, rejected.overall, reason)
    return DraftVerdict(True, chosen.overall, rejected.overall, None)


def draft_trajectories(
    pair: PreferencePair, draft: TeacherDraft, verdict: DraftVerdict, teacher: str
) -> list[Trajectory]:
    """The two trajectories (chosen, rejected) of an accepted draft."""
    if not verdict.accepted or verdict.chosen_score is None or verdict.rejected_score is None:
        raise ValueError("only an accepted draft becomes trajectories")
    common = {"pair_id": pair.id, "query": pair.prompt, "criteria": draft.criteria, "teacher": teacher}
    return [
        Trajectory(response=pair.chosen, role="chosen", evaluation=draft.chosen_evaluation,
                   score=verdict.chosen_score, **common),
        Trajectory(response=pair.rejected, role="rejected", evaluation=draft.rejected_evaluation,
                   score=verdict.rejected_score, **common),
    ]  # fmt: skip


class JudgeTeacher:
    """A :class:`Teacher` around any :class:`cerm.Judge`: each attempt judges every pair's two responses together
    (one shared criteria set per chain, through :meth:`Judge.judge_batch`), and each chain, a criteria sample with
    its evaluation of both responses, is one draft. So ``judge.config.k`` is the number of drafts per attempt.

    Sampling: attempts must differ, so attempt ``a`` runs with ``seed = base_seed + a`` (the Judge's own config
    otherwise; give it ``temperature > 0`` or ``k > 1`` for sampled chains). The criteria cache is not used: a cached
    criteria set would make every attempt the same. ``batch_size`` pairs go to the backend per call.
    """

    def __init__(self, judge: Judge, *, base_seed: int = 0, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        self.judge = judge
        self.base_seed = base_seed
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return f"judge:{self.judge.backend.model_id}"

    def drafts(self, pairs: Sequence[PreferencePair], attempt: int) -> list[list[TeacherDraft]]:
        from cerm._judge import Judge

        judge = Judge(self.judge.backend, config=self.judge.config.with_(seed=self.base_seed + attempt))
        out: list[list[TeacherDraft]] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            rows = judge.judge_batch([(pair.prompt, [pair.chosen, pair.rejected]) for pair in chunk])
            for chosen, rejected in rows:
                drafts: list[TeacherDraft] = []
                for c_chain, r_chain in zip(chosen.chains, rejected.chains, strict=False):
                    drafts.append(_chain_draft(c_chain, r_chain))
                if not chosen.chains or not rejected.chains:  # the Judge refused a response (e.g. bad unicode)
                    reason = chosen.reason or rejected.reason or "no chains"
                    drafts.append(TeacherDraft("", "", "", problem=f"not judged: {reason}"))
                out.append(drafts)
            logger.info("teach: attempt %d, %d of %d pairs drafted", attempt + 1, len(out), len(pairs))
        return out


def _chain_draft(chosen: Chain, rejected: Chain) -> TeacherDraft:
    """The draft of one chain pair. The Judge's own verdict on each chain is respected: a failed generation is an
    error, and a chain without a parsed score (cut off at the token budget, no box, an overlong response that was not
    evaluated, a forced readout) is a written but unusable draft."""
    if chosen.failed or rejected.failed:
        return TeacherDraft("", "", "", error=f"generation failed: {chosen.reason or rejected.reason}")
    if chosen.criteria.text != rejected.criteria.text:
        return TeacherDraft("", "", "", error="the chains of the two responses do not share one criteria set")
    texts = (
        chosen.criteria.text,
        chosen.evaluation.text if chosen.evaluation is not None else "",
        rejected.evaluation.text if rejected.evaluation is not None else "",
    )
    for chain in (chosen, rejected):
        if chain.score is None or chain.score_source != "parsed":
            problem = chain.reason or f"the score was not parsed from the text ({chain.score_source})"
            return TeacherDraft(*texts, problem=problem)
    return TeacherDraft(*texts)


TeacherKind = Literal["programmatic", "judge"]


@dataclass
class TeachConfig:
    """Settings of :func:`teach` (plain values: build it from YAML or a dict with ``TeachConfig(**data)``).

    Data (at least one source):

    * ``data``: preference pairs: a JSONL file (cerm's pair or benchmark schema), a ``curate`` output directory, or a
      hub id (see :func:`cerm.training.load_pairs`); ``data_split`` picks the hub split, ``data_schema`` forces a
      schema (``"auto"`` detects it), ``limit`` keeps the first pairs.
    * ``checkable`` / ``open_ended``: add that many generated pairs of :func:`checkable_pairs` /
      :func:`open_ended_pairs` (train split, ``seed``; the programmatic teacher's wording is seeded by it too).

    ``output_dir``: the stage directory to write (see the module docstring).

    Teacher:

    * ``teacher``: ``"programmatic"`` (generated pairs only; others are counted as unsupported) or ``"judge"``;
    * ``judge_model`` / ``judge_backend`` / ``judge_backend_kwargs``: the teacher judge (``Judge(judge_model,
      backend=judge_backend, **judge_backend_kwargs)``), e.g. ``"PKU-ONELab/CE-RM-4B"`` on ``"vllm"``;
    * ``samples``: chains (criteria sample + both evaluations) per attempt, the judge's ``k``;
    * ``attempts``: rounds of sampling for pairs still lacking an accepted draft;
    * ``temperature``: the teacher judge's sampling temperature (rejection sampling needs variety); attempt ``a``
      samples with seed ``seed + a``;
    * ``criteria_max_new_tokens`` / ``evaluation_max_new_tokens``: the teacher judge's token budgets;
    * ``batch_size``: pairs per backend call.

    Acceptance: ``keep_per_pair`` accepted drafts at most per pair (each gives two trajectories); ``strict_format``
    also rejects evaluations with parser warnings (see :func:`check_draft`).
    """

    output_dir: str
    data: str | None = None
    data_split: str | None = None
    data_schema: Schema = "auto"
    limit: int | None = None
    checkable: int = 0
    open_ended: int = 0
    seed: int = 0
    teacher: TeacherKind = "programmatic"
    judge_model: str | None = None
    judge_backend: str = "hf"
    judge_backend_kwargs: dict[str, Any] = field(default_factory=dict)
    samples: int = 4
    attempts: int = 2
    temperature: float = 0.7
    criteria_max_new_tokens: int = 1024
    evaluation_max_new_tokens: int = 2048
    batch_size: int = 16
    keep_per_pair: int = 1
    strict_format: bool = True

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ConfigurationError("TeachConfig.output_dir is required")
        if self.data is None and self.checkable == 0 and self.open_ended == 0:
            raise ConfigurationError("TeachConfig needs data: set data, checkable or open_ended")
        for name in ("checkable", "open_ended"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"TeachConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("samples", "attempts", "batch_size", "keep_per_pair", "criteria_max_new_tokens",
                     "evaluation_max_new_tokens"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigurationError(f"TeachConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigurationError(f"TeachConfig.limit must be >= 1, got {self.limit}")
        if self.teacher not in ("programmatic", "judge"):
            raise ConfigurationError(f"TeachConfig.teacher must be 'programmatic' or 'judge', got {self.teacher!r}")
        if self.teacher == "judge" and not self.judge_model:
            raise ConfigurationError("TeachConfig.teacher='judge' needs judge_model")
        if self.temperature < 0:
            raise ConfigurationError(f"TeachConfig.temperature must be >= 0, got {self.temperature}")
        if self.teacher == "judge" and self.temperature == 0 and (self.samples > 1 or self.attempts > 1):
            raise ConfigurationError("several samples or attempts need temperature > 0 (greedy repeats itself)")


def teach_pairs(config: TeachConfig) -> list[PreferencePair]:
    """The pairs a :class:`TeachConfig` names: its data (loaded with :func:`cerm.training.load_pairs`), then the
    generated pairs, in that order."""
    from cerm.training._checkable import checkable_pairs
    from cerm.training._load import load_pairs
    from cerm.training._open_ended import open_ended_pairs

    pairs: list[PreferencePair] = []
    if config.data is not None:
        pairs.extend(load_pairs(config.data, split=config.data_split, schema=config.data_schema, limit=config.limit))
    if config.checkable:
        pairs.extend(checkable_pairs(config.checkable, seed=config.seed, split="train"))
    if config.open_ended:
        pairs.extend(open_ended_pairs(config.open_ended, seed=config.seed, split="train"))
    check_unique_ids(pairs, "teach data")
    return pairs


def _make_teacher(config: TeachConfig) -> Teacher:
    if config.teacher == "programmatic":
        from cerm.training._programmatic import ProgrammaticTeacher

        return ProgrammaticTeacher(seed=config.seed)
    from cerm._config import JudgeConfig
    from cerm._judge import Judge

    judge_config = JudgeConfig(
        criteria_max_new_tokens=config.criteria_max_new_tokens,
        evaluation_max_new_tokens=config.evaluation_max_new_tokens,
        temperature=config.temperature,
        k=config.samples,
        scaling="chains",
    )
    assert config.judge_model is not None
    judge = Judge(config.judge_model, backend=config.judge_backend, config=judge_config, **config.judge_backend_kwargs)
    return JudgeTeacher(judge, base_seed=config.seed, batch_size=config.batch_size)


def teach(
    config: TeachConfig, *, teacher: Teacher | None = None, pairs: Sequence[PreferencePair] | None = None
) -> Path:
    """Run rejection sampling and write the output directory (see the module docstring); returns its path.

    ``teacher`` overrides the one the config names (e.g. a :class:`JudgeTeacher` around a Judge you built);
    ``pairs`` overrides the config's data. Per attempt, every pair still short of ``keep_per_pair`` accepted drafts
    gets new drafts; a draft is accepted by :func:`check_draft`. The acceptance rate (accepted drafts over drafts
    written, failed generations excluded) is logged and recorded in the manifest.
    """
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = list(pairs) if pairs is not None else teach_pairs(config)
    if not pairs:
        raise ConfigurationError("teach: no pairs to teach")
    check_unique_ids(pairs, "teach data")
    owned = teacher is None
    teacher = teacher or _make_teacher(config)
    try:
        accepted: dict[str, list[Trajectory]] = {pair.id: [] for pair in pairs}
        log: dict[str, dict[str, Any]] = {
            pair.id: {"pair_id": pair.id, "drafts": 0, "accepted": 0, "kept": 0, "errors": 0, "rejected": Counter()}
            for pair in pairs
        }
        unsupported: set[str] = set()
        for attempt in range(config.attempts):
            pending = [p for p in pairs if len(accepted[p.id]) < 2 * config.keep_per_pair and p.id not in unsupported]
            if not pending:
                break
            all_drafts = teacher.drafts(pending, attempt)
            if len(all_drafts) != len(pending):
                raise RuntimeError(
                    f"teacher {teacher.name} returned {len(all_drafts)} draft lists for {len(pending)} pairs"
                )
            for pair, drafts in zip(pending, all_drafts, strict=False):
                entry = log[pair.id]
                if not drafts and attempt == 0:
                    unsupported.add(pair.id)
                for draft in drafts:
                    verdict = check_draft(draft, strict_format=config.strict_format)
                    if verdict.reason == "error":
                        entry["errors"] += 1
                        continue
                    entry["drafts"] += 1
                    if not verdict.accepted:
                        entry["rejected"][verdict.reason] += 1
                        continue
                    entry["accepted"] += 1
                    if len(accepted[pair.id]) < 2 * config.keep_per_pair:  # beyond keep_per_pair: accepted, not kept
                        accepted[pair.id].extend(draft_trajectories(pair, draft, verdict, teacher.name))
                        entry["kept"] += 1
            logger.info(
                "teach attempt %d/%d: %d pairs drafted, %d now accepted",
                attempt + 1, config.attempts, len(pending), sum(1 for v in accepted.values() if v),
            )  # fmt: skip
    finally:
        if owned and isinstance(teacher, JudgeTeacher):
            teacher.judge.close()

    trajectories = [t for pair in pairs for t in accepted[pair.id]]
    write_trajectories(trajectories, out_dir / TRAJECTORIES_FILE)
    write_pairs(pairs, out_dir / PAIRS_FILE)
    reasons: Counter[str] = Counter()
    with (out_dir / TEACH_LOG_FILE).open("w", encoding="utf-8") as handle:
        for pair in pairs:
            entry = log[pair.id]
            reasons.update(entry["rejected"])
            record = {**entry, "rejected": dict(entry["rejected"]), "unsupported": pair.id in unsupported}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    drafts = sum(e["drafts"] for e in log.values())
    drafts_accepted = sum(e["accepted"] for e in log.values())
    pairs_accepted = sum(1 for v in accepted.values() if v)
    stats = {
        "teacher": teacher.name,
        "pairs": len(pairs),
        "pairs_unsupported": len(unsupported),
        "pairs_accepted": pairs_accepted,
        "drafts": drafts,
        "drafts_accepted": drafts_accepted,
        "drafts_kept": sum(e["kept"] for e in log.values()),
        "drafts_errored": sum(e["errors"] for e in log.values()),
        "acceptance_rate": drafts_accepted / drafts if drafts else None,
        "pair_acceptance_rate": pairs_accepted / (len(pairs) - len(unsupported))
        if len(pairs) > len(unsupported)
        else None,
        "rejections": dict(sorted(reasons.items())),
        "trajectories": len(trajectories),
    }
    write_manifest(
        out_dir,
        stage="teach",
        config=config,
        inputs={"pairs": pairs_digest(pairs)},
        outputs=[TRAJECTORIES_FILE, PAIRS_FILE, TEACH_LOG_FILE],
        stats=stats,
    )
    logger.info(
        "teach: %d of %d drafts accepted (%.1f%%), %d of %d pairs, %d trajectories -> %s",
        drafts_accepted, drafts, 100 * (stats["acceptance_rate"] or 0.0), pairs_accepted, len(pairs),
        len(trajectories), out_dir,
    )  # fmt: skip
    return out_dir
