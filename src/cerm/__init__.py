"""cerm: CE-RM pointwise generative reward models.

A CE-RM judge writes one set of evaluation criteria per query, then scores each response against those criteria
(0-10), so N responses cost 1 + N generations and every response is judged by the same yardstick. The ESFP-RM
:class:`SlotJudge` (an explanation, then a masked LM's verbalizer readout) is the second judge kind; both implement
:class:`RewardJudge`, the interface every surface takes.

>>> from cerm import Judge
>>> judge = Judge("PKU-ONELab/CE-RM-4B")                      # doctest: +SKIP
>>> judge.score("Explain TCP slow start.", [answer_a, answer_b])   # doctest: +SKIP
[7.5, 4.0]
"""

from cerm._cache import CriteriaCache, CriteriaCacheKey, MemoryCriteriaCache, SQLiteCriteriaCache
from cerm._config import JudgeConfig
from cerm._embedded import DEMO_MODEL, RECOMMENDED_MODEL
from cerm._errors import BackendUnavailableError, CermError, ConfigurationError, ModelNotFoundError
from cerm._judge import Judge, validate_item
from cerm._reward_judge import RewardJudge
from cerm._shards import MergeReport, Shard, ShardReport, merge_shards, score_shard
from cerm._slot import (
    BackendExplainer,
    CausalSlotReader,
    CermExplainer,
    MaskedSlotReader,
    SlotJudge,
    SlotJudgeConfig,
    slot_judge_from_config,
)
from cerm._ties import TieBreak
from cerm._types import (
    BestOfN,
    CandidateSamples,
    Chain,
    Comparison,
    Criteria,
    Criterion,
    CriterionScore,
    Evaluation,
    Judgment,
    OtherPoints,
    Provenance,
    RankedResponse,
    ScoreReadout,
    ScoreSource,
    SlotRecord,
    Status,
    TieBreakReport,
    Usage,
)
from cerm._version import __version__
from cerm.backends import Backend, Completion, SamplingParams, create_backend
from cerm.training import Trainer

__all__ = [
    "DEMO_MODEL",
    "RECOMMENDED_MODEL",
    "Backend",
    "BackendExplainer",
    "BackendUnavailableError",
    "BestOfN",
    "CandidateSamples",
    "CausalSlotReader",
    "CermError",
    "CermExplainer",
    "Chain",
    "Comparison",
    "Completion",
    "ConfigurationError",
    "Criteria",
    "CriteriaCache",
    "CriteriaCacheKey",
    "Criterion",
    "CriterionScore",
    "Evaluation",
    "Judge",
    "JudgeConfig",
    "Judgment",
    "MaskedSlotReader",
    "MemoryCriteriaCache",
    "MergeReport",
    "ModelNotFoundError",
    "OtherPoints",
    "Provenance",
    "RankedResponse",
    "RewardJudge",
    "SQLiteCriteriaCache",
    "SamplingParams",
    "ScoreReadout",
    "ScoreSource",
    "Shard",
    "ShardReport",
    "SlotJudge",
    "SlotJudgeConfig",
    "SlotRecord",
    "Status",
    "TieBreak",
    "TieBreakReport",
    "Trainer",
    "Usage",
    "__version__",
    "create_backend",
    "merge_shards",
    "score_shard",
    "slot_judge_from_config",
    "validate_item",
]
