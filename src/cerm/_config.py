"""One config object for everything the Judge decides: token budgets, decoding, test-time scaling, truncation."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from cerm._errors import ConfigurationError
from cerm.backends._base import SamplingParams

ScalingMode = Literal["chains", "evaluations", "grid"]
OverlongPolicy = Literal["truncate", "unscorable"]
ScoreReadoutMode = Literal["parsed", "expected"]

_T = TypeVar("_T")


def _setting(default: _T, help: str, *, flags: tuple[str, ...] = ()) -> _T:
    """A config field with its one-line description: the command line's options are generated from these (help text,
    and ``flags`` when a field keeps a historical spelling such as ``-k``), so a new field appears there by itself."""
    return field(default=default, metadata={"help": help, "flags": flags})


@dataclass(frozen=True)
class JudgeConfig:
    """Settings of a :class:`cerm.Judge`.

    Decoding is greedy by default (``temperature=0``), as the CE-RM model card prescribes.

    Test-time scaling (SPEC section 1, DEFINED): with ``k > 1``,

    * ``"chains"`` (default): k criteria sets are sampled, each response is evaluated once under each, and the k
      overall scores are averaged;
    * ``"evaluations"``: one criteria set (decoded with ``temperature``), k sampled evaluations per response;
    * ``"grid"``: k criteria sets x k sampled evaluations per response.

    The two stage counts can also be set on their own (the training recipe's nc x ne shape): ``criteria_samples``
    criteria sets per query and ``evaluation_samples`` evaluations of each response under each set, so a response
    gets ``criteria_samples * evaluation_samples`` chains. Left at None (default), each comes from ``k`` and
    ``scaling`` as above (``criteria_sets`` and ``evaluations_per_set`` give the counts in force); ``k=4`` is
    ``criteria_samples=4`` and ``k=4, scaling="grid"`` is ``criteria_samples=4, evaluation_samples=4``. Setting a
    count that ``k`` > 1 also sets, to a different value, is refused.

    Sampled turns use ``scaling_temperature`` when ``temperature`` is 0. The judgment's score is the mean over the
    scorable chains, ``spread`` their standard deviation; a response is UNSCORABLE only if no chain scored it.

    Responses too long for the model's context are truncated (``overlong="truncate"``, recorded as a warning in the
    judgment) or marked UNSCORABLE (``overlong="unscorable"``). ``max_response_tokens`` caps responses further.

    Finer scores (opt-in; every chain records how its score was read in ``Chain.score_source``):

    * ``score_readout="expected"``: where the evaluation closed the format, the score is the expectation over the
      probabilities of the score tokens at its last ``\\boxed{`` (the backend must return log-probabilities; the
      evaluation turn then asks for ``readout_top_logprobs`` alternatives per token). Continuous scores mean fewer
      ties. When the top-k alternatives cover less than ``readout_min_mass`` of the probability, the parsed score is
      kept and a warning says why.
    * ``forced_readout=True``: an evaluation that did not close the format (no boxed overall score, or cut off) is
      continued with an explicit overall-score prefix ending in ``\\boxed{`` (the backend must support prefill),
      and the score is read from what follows: the value written (``"forced_parsed"``) or, with
      ``score_readout="expected"``, the expectation (``"forced_expected"``). Below ``readout_min_mass`` the judgment
      stays UNSCORABLE. Forced scores are a readout, not the protocol's verdict: they are marked as such.
    """

    criteria_max_new_tokens: int = _setting(1024, "token budget of the criteria turn")
    evaluation_max_new_tokens: int = _setting(2048, "token budget of each evaluation turn")
    temperature: float = _setting(0.0, "decoding temperature of both turns; 0 = greedy, as the model card prescribes")
    top_p: float = _setting(1.0, "nucleus sampling cut-off of sampled turns")
    k: int = _setting(1, "test-time scaling: number of chains (or samples, see --scaling) per response", flags=("-k",))
    scaling: ScalingMode = _setting(
        "chains", "test-time scaling when k > 1: k criteria sets, k evaluations under one, or k x k"
    )
    scaling_temperature: float = _setting(
        0.7, "temperature of the sampled turns of test-time scaling when temperature is 0"
    )
    seed: int | None = _setting(None, "sampling seed of the judge (reproducible sampled turns)")
    top_logprobs: int | None = _setting(
        None, "also return this many alternatives (log-probabilities) per generated token"
    )
    overlong: OverlongPolicy = _setting(
        "truncate", "responses longer than the model context: truncate (with a warning) or unscorable"
    )
    max_response_tokens: int | None = _setting(None, "truncate every response to at most this many tokens")
    score_readout: ScoreReadoutMode = _setting(
        "parsed", "'expected': the expected score from the score tokens' probabilities (fewer ties; needs logprobs)"
    )
    forced_readout: bool = _setting(
        False,
        "read a score after an explicit overall-score prefix where the judge did not close the format (marked as "
        "forced in the output)",
    )
    readout_top_logprobs: int = _setting(20, "alternatives per token read by the expected and forced readouts")
    readout_min_mass: float = _setting(
        0.5, "a readout whose valid score tokens hold less probability than this is not trusted"
    )
    criteria_samples: int | None = _setting(
        None, "criteria sets sampled per query (the recipe's nc); none: from -k and --scaling"
    )
    evaluation_samples: int | None = _setting(
        None, "evaluations of each response under each criteria set (the recipe's ne); none: from -k and --scaling"
    )

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigurationError(f"k must be >= 1, got {self.k}")
        if self.scaling not in ("chains", "evaluations", "grid"):
            raise ConfigurationError(f"scaling must be 'chains', 'evaluations' or 'grid', got {self.scaling!r}")
        if self.overlong not in ("truncate", "unscorable"):
            raise ConfigurationError(f"overlong must be 'truncate' or 'unscorable', got {self.overlong!r}")
        for name in ("criteria_samples", "evaluation_samples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{name} must be an int >= 1 or None, got {value!r}")
        from_k = {"criteria_samples": self._k_criteria, "evaluation_samples": self._k_evaluations}
        for name, implied in from_k.items():
            value = getattr(self, name)
            if value is not None and implied > 1 and value != implied:
                raise ConfigurationError(
                    f"k={self.k} with scaling={self.scaling!r} sets {name}={implied}, but {name}={value} was given: "
                    f"set the stage counts or k, not both"
                )
        if (
            self.criteria_sets * self.evaluations_per_set > 1
            and self.temperature == 0
            and self.scaling_temperature <= 0
        ):
            raise ConfigurationError(
                "k > 1 needs sampling (so do criteria_samples or evaluation_samples > 1): set temperature or "
                "scaling_temperature above 0"
            )
        if self.score_readout not in ("parsed", "expected"):
            raise ConfigurationError(f"score_readout must be 'parsed' or 'expected', got {self.score_readout!r}")
        if self.readout_top_logprobs < 1:
            raise ConfigurationError(f"readout_top_logprobs must be >= 1, got {self.readout_top_logprobs}")
        if not 0.0 <= self.readout_min_mass <= 1.0:
            raise ConfigurationError(f"readout_min_mass must be in [0, 1], got {self.readout_min_mass}")
        if self.max_response_tokens is not None and self.max_response_tokens < 1:
            raise ConfigurationError(f"max_response_tokens must be >= 1, got {self.max_response_tokens}")
        # Validate the budgets and decoding values once, here, rather than at the first backend call. SamplingParams
        # says what is wrong with a plain ValueError; here it is a setting of this config, so a ConfigurationError.
        try:
            self.criteria_sampling()
            self.evaluation_sampling()
        except ConfigurationError:
            raise
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    def with_(self, **changes: Any) -> JudgeConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def _k_criteria(self) -> int:
        return self.k if self.scaling in ("chains", "grid") else 1

    @property
    def _k_evaluations(self) -> int:
        return self.k if self.scaling in ("evaluations", "grid") else 1

    @property
    def criteria_sets(self) -> int:
        """Criteria sets sampled per query: ``criteria_samples``, else what ``k`` and ``scaling`` say."""
        return self.criteria_samples if self.criteria_samples is not None else self._k_criteria

    @property
    def evaluations_per_set(self) -> int:
        """Evaluations of each response under each criteria set: ``evaluation_samples``, else from ``k``/``scaling``."""
        return self.evaluation_samples if self.evaluation_samples is not None else self._k_evaluations

    @property
    def chains_per_response(self) -> int:
        return self.criteria_sets * self.evaluations_per_set

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
        return self._params(self.criteria_max_new_tokens, self.criteria_sets, salt=0)

    def evaluation_sampling(self) -> SamplingParams:
        # A different seed offset keeps stage-2 samples independent of stage-1 samples.
        params = self._params(self.evaluation_max_new_tokens, self.evaluations_per_set, salt=1_000_003)
        if self.score_readout == "expected":
            # The expected score needs the alternatives at the score position.
            top = max(params.top_logprobs or 0, self.readout_top_logprobs)
            params = replace(params, top_logprobs=top)
        return params

    def readout_sampling(self) -> SamplingParams:
        """The forced readout's continuation: greedy, a few tokens (enough for " 10.5 }"), with alternatives."""
        return SamplingParams(max_new_tokens=8, temperature=0.0, n=1, top_logprobs=self.readout_top_logprobs)
