"""One config object for everything the Judge decides: token budgets, decoding, test-time scaling, truncation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from cerm._errors import ConfigurationError
from cerm.backends._base import SamplingParams

ScalingMode = Literal["chains", "evaluations", "grid"]
OverlongPolicy = Literal["truncate", "unscorable"]


@dataclass(frozen=True)
class JudgeConfig:
    """Settings of a :class:`cerm.Judge`.

    Decoding is greedy by default (``temperature=0``), as the CE-RM model card prescribes.

    Test-time scaling (SPEC section 1, DEFINED): with ``k > 1``,

    * ``"chains"`` (default): k criteria sets are sampled, each response is evaluated once under each, and the k
      overall scores are averaged;
    * ``"evaluations"``: one criteria set (decoded with ``temperature``), k sampled evaluations per response;
    * ``"grid"``: k criteria sets x k sampled evaluations per response.

    Sampled turns use ``scaling_temperature`` when ``temperature`` is 0. The judgment's score is the mean over the
    scorable chains, ``spread`` their standard deviation; a response is UNSCORABLE only if no chain scored it.

    Responses too long for the model's context are truncated (``overlong="truncate"``, recorded as a warning in the
    judgment) or marked UNSCORABLE (``overlong="unscorable"``). ``max_response_tokens`` caps responses further.
    """

    criteria_max_new_tokens: int = 1024
    evaluation_max_new_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 1.0
    k: int = 1
    scaling: ScalingMode = "chains"
    scaling_temperature: float = 0.7
    seed: int | None = None
    top_logprobs: int | None = None
    overlong: OverlongPolicy = "truncate"
    max_response_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigurationError(f"k must be >= 1, got {self.k}")
        if self.scaling not in ("chains", "evaluations", "grid"):
            raise ConfigurationError(f"scaling must be 'chains', 'evaluations' or 'grid', got {self.scaling!r}")
        if self.overlong not in ("truncate", "unscorable"):
            raise ConfigurationError(f"overlong must be 'truncate' or 'unscorable', got {self.overlong!r}")
        if self.k > 1 and self.temperature == 0 and self.scaling_temperature <= 0:
            raise ConfigurationError("k > 1 needs sampling: set temperature or scaling_temperature above 0")
        if self.max_response_tokens is not None and self.max_response_tokens < 1:
            raise ConfigurationError(f"max_response_tokens must be >= 1, got {self.max_response_tokens}")
        # Validate the budgets and decoding values once, here, rather than at the first backend call.
        self.criteria_sampling()
        self.evaluation_sampling()

    def with_(self, **changes: Any) -> JudgeConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def criteria_samples(self) -> int:
        return self.k if self.scaling in ("chains", "grid") else 1

    @property
    def evaluation_samples(self) -> int:
        return self.k if self.scaling in ("evaluations", "grid") else 1

    def _params(self, max_new_tokens: int, n: int, salt: int) -> SamplingParams:
        sampled = n > 1
        temperature = self.temperature if (self.temperature > 0 or not sampled) else self.scaling_temperature
        seed = None if self.seed is None else self.seed + salt
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=self.top_p,
            n=n,
            seed=seed,
            top_logprobs=self.top_logprobs,
        )

    def criteria_sampling(self) -> SamplingParams:
        return self._params(self.criteria_max_new_tokens, self.criteria_samples, salt=0)

    def evaluation_sampling(self) -> SamplingParams:
        # A different seed offset keeps stage-2 samples independent of stage-1 samples.
        return self._params(self.evaluation_max_new_tokens, self.evaluation_samples, salt=1_000_003)
