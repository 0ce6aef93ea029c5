"""Integrations: a CE-RM judge inside the RL and inference tools people already use.

* TRL: :class:`CermRewardFunc` / :class:`AsyncCermRewardFunc` for ``GRPOTrainer(reward_funcs=[...])``;
* veRL: :class:`VerlReward`, a custom ``compute_score`` (single and batched forms);
* OpenRLHF: :func:`create_app` / :class:`RewardServer`, the remote reward server (also ``cerm serve``);
* Best-of-N: :func:`best_of_n`, :func:`best_of_n_batch`, :func:`abest_of_n`, :func:`rerank`.

Each lives in its own module and is imported on first use, so ``import cerm.integrations`` pulls in neither FastAPI
nor any trainer. Every integration goes through :class:`cerm.Judge`; none builds prompts or parses scores itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cerm.integrations._common import Scale
    from cerm.integrations.openrlhf import RewardServer, create_app
    from cerm.integrations.selection import abest_of_n, best_of_n, best_of_n_batch, rerank, sample_candidates
    from cerm.integrations.trl import AsyncCermRewardFunc, CermRewardFunc
    from cerm.integrations.verl import JudgeUnavailableError, VerlReward

_EXPORTS = {
    "Scale": "cerm.integrations._common",
    "CermRewardFunc": "cerm.integrations.trl",
    "AsyncCermRewardFunc": "cerm.integrations.trl",
    "VerlReward": "cerm.integrations.verl",
    "JudgeUnavailableError": "cerm.integrations.verl",
    "create_app": "cerm.integrations.openrlhf",
    "RewardServer": "cerm.integrations.openrlhf",
    "best_of_n": "cerm.integrations.selection",
    "best_of_n_batch": "cerm.integrations.selection",
    "abest_of_n": "cerm.integrations.selection",
    "rerank": "cerm.integrations.selection",
    "sample_candidates": "cerm.integrations.selection",
}

__all__ = [
    "AsyncCermRewardFunc",
    "CermRewardFunc",
    "JudgeUnavailableError",
    "RewardServer",
    "Scale",
    "VerlReward",
    "abest_of_n",
    "best_of_n",
    "best_of_n_batch",
    "create_app",
    "rerank",
    "sample_candidates",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cerm.integrations' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
