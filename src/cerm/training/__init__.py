"""Training your own CE-RM judge (SPEC section 2): curation, teacher SFT targets, cold-start SFT, then GRPO.

This package composes the same pieces as inference: curation uses the Judge, SFT targets come from a teacher Judge,
GRPO rollouts come from a backend and rewards from :mod:`cerm.protocol`.

Data half: :class:`PreferencePair` and :func:`load_pairs` (cerm JSONL, ``datasets``, Skywork-Reward-Preference),
the seeded generators :func:`checkable_pairs` and :func:`open_ended_pairs` (fixed held-out splits), teachers
(:class:`ProgrammaticTeacher`, :class:`JudgeTeacher`) with rejection sampling in :func:`teach`, and curation.

Model half: :class:`SFTConfig` and cold-start SFT on TRL's SFTTrainer (loss on both assistant turns, masks from the
protocol's own rendering), and :class:`GRPOConfig`, two-stage-rollout GRPO on TRL's GRPOTrainer (rewards and
advantages from :mod:`cerm.protocol`), behind :class:`Trainer`. Every stage writes a folder with a ``manifest.json``
(config, input hashes, statistics); an SFT or GRPO folder loads directly in ``Judge(folder)``. ``import cerm.training``
stays light: torch, trl and datasets load when a stage runs.
"""

from __future__ import annotations

from cerm.training._checkable import checkable_pairs, split_of
from cerm.training._clusters import LABEL_PROMPT, TASK_LABELS
from cerm.training._curate import CurateConfig, curate
from cerm.training._grpo import GRPOConfig, GRPOResult
from cerm.training._load import detect_schema, load_pairs
from cerm.training._manifest import read_manifest
from cerm.training._open_ended import open_ended_pairs
from cerm.training._pairs import PairError, PreferencePair, read_pairs, write_pairs
from cerm.training._programmatic import ProgrammaticTeacher
from cerm.training._sft import SFTConfig, SFTResult
from cerm.training._slot import SlotTrainConfig, SlotTrainResult, run_slot_training
from cerm.training._teach import (
    DraftVerdict,
    JudgeTeacher,
    TeachConfig,
    Teacher,
    TeacherDraft,
    Trajectory,
    check_draft,
    read_trajectories,
    teach,
    teach_pairs,
    write_trajectories,
)
from cerm.training._trainer import Trainer

__all__ = [
    "LABEL_PROMPT",
    "TASK_LABELS",
    "CurateConfig",
    "DraftVerdict",
    "GRPOConfig",
    "GRPOResult",
    "JudgeTeacher",
    "PairError",
    "PreferencePair",
    "ProgrammaticTeacher",
    "SFTConfig",
    "SFTResult",
    "SlotTrainConfig",
    "SlotTrainResult",
    "TeachConfig",
    "Teacher",
    "TeacherDraft",
    "Trainer",
    "Trajectory",
    "check_draft",
    "checkable_pairs",
    "curate",
    "detect_schema",
    "load_pairs",
    "open_ended_pairs",
    "read_manifest",
    "read_pairs",
    "read_trajectories",
    "run_slot_training",
    "split_of",
    "teach",
    "teach_pairs",
    "write_pairs",
    "write_trajectories",
]
