"""Training your own CE-RM judge (SPEC section 2): curation, teacher SFT targets, cold-start SFT, then GRPO.

Everything here composes the inference pieces: curation uses the Judge, SFT targets come from a teacher Judge or the
programmatic teacher, and SFT conversations are rendered by :mod:`cerm.protocol` exactly as inference renders them.
The training loops are TRL's. ``import cerm.training`` stays light: torch, trl and datasets load when a stage runs.
"""

from __future__ import annotations

from cerm.training._artifacts import MANIFEST, read_manifest, resolve_trained_dir
from cerm.training._sft import SFTConfig, SFTResult
from cerm.training._trainer import Trainer

__all__ = ["MANIFEST", "SFTConfig", "SFTResult", "Trainer", "read_manifest", "resolve_trained_dir"]
