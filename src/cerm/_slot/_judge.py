"""The ESFP-RM slot judge: an explanation (stage 1), then a masked LM's verbalizer readout at one slot (stage 2).

:class:`SlotJudge` implements :class:`~cerm.RewardJudge`, so every surface that takes the CE-RM judge takes it too.
Every design choice is cerm's (the paper was withdrawn without code): see :mod:`cerm.protocol._slot` and the README.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cerm._errors import ConfigurationError
from cerm._judge import _EMPTY_REASON, _is_blank, _json_ready, _unicode_problem, split_items
from cerm._reward_judge import Item, OnInvalid, RewardJudge
from cerm._slot._encode import SlotInput
from cerm._slot._explain import Explained, Explainer
from cerm._slot._readers import CausalSlotReader, MaskedSlotReader, SlotFailure, SlotReader
from cerm._types import Judgment, Provenance, SlotRecord, Status, Usage
from cerm.backends._base import Backend
from cerm.protocol import (
    DEFAULT_EXPLANATION_PROMPT,
    DEFAULT_SLOT_TEMPLATE,
    PLAIN_SLOT_TEMPLATE,
    ExplanationPrompt,
    SlotReadout,
    SlotTemplate,
    Verbalizer,
    slot_reward,
    slot_score_range,
)

if TYPE_CHECKING:
    from cerm._cache import CriteriaCache
    from cerm._config import JudgeConfig

ExplanationMode = Literal["backend", "ce-rm", "none"]
ReaderKind = Literal["masked", "causal"]


class SlotJudge(RewardJudge):
    """An ESFP-RM judge: ``explainer`` writes an explanation per response (None: the template has no explanation),
    ``reader`` reads the verbalizer classes at the template's slot, and ``readout`` turns them into the score.

    >>> judge = SlotJudge(MaskedSlotReader("my-bert"), BackendExplainer(create_backend("hf", "demo")))  # doctest: +SKIP
    >>> judge.score("What is 2+2?", ["4", "5"])                                                    # doctest: +SKIP

    Scores: ``readout="probability"`` (default) is ``10 * p(positive | positive or negative)``, on CE-RM's 0-10 range,
    so reward scales and reports that read 0-10 apply; ``"log_odds"`` is ``log p(positive) - log p(negative)``,
    unbounded (surfaces then refuse a reward ``scale``). A response whose explanation failed is ERROR; an empty response
    or explanation, or an input whose template does not fit the slot model, is UNSCORABLE; neither has a number.
    Each judgment's ``slot`` (:class:`~cerm.SlotRecord`) keeps the explanation and the class log-probabilities.
    """

    kind = "esfp-slot"

    def __init__(
        self,
        reader: SlotReader,
        explainer: Explainer | None = None,
        *,
        readout: SlotReadout = "probability",
        owns_reader: bool = False,
    ) -> None:
        if not isinstance(reader, SlotReader):
            raise TypeError(f"reader must be a cerm slot reader, got {type(reader).__name__}")
        if explainer is not None and not isinstance(explainer, Explainer):
            raise TypeError(f"explainer must be a cerm explainer or None, got {type(explainer).__name__}")
        if readout not in ("log_odds", "probability"):
            raise ValueError(f"readout must be 'log_odds' or 'probability', got {readout!r}")
        if reader.template.uses_explanation and explainer is None:
            raise ConfigurationError("the slot template has {explanation} but no explainer was given")
        if explainer is not None and not reader.template.uses_explanation:
            raise ConfigurationError("an explainer was given but the slot template has no {explanation} to put it in")
        self.reader = reader
        self.explainer = explainer
        self.readout: SlotReadout = readout
        self._owns_reader = owns_reader
        # The explainer's per-query cache (a CE-RM explainer's criteria cache), fixed with the explainer.
        self.cache = None if explainer is None else explainer.cache
        self._described: dict[str, Any] = _json_ready(self._describe())

    # -- RewardJudge ---------------------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.reader.model_id

    @property
    def backend_name(self) -> str:
        return self.reader.runtime

    @property
    def score_range(self) -> tuple[float, float] | None:
        return slot_score_range(self.readout)

    def uncached_queries(self, queries: Sequence[str]) -> list[str]:
        return [] if self.explainer is None else self.explainer.uncached_queries(queries)

    def with_query_cache(self, size: int) -> SlotJudge:
        if self.explainer is None:
            return self
        explainer = self.explainer.with_query_cache(size)
        return self if explainer is self.explainer else SlotJudge(self.reader, explainer, readout=self.readout)

    def describe(self) -> dict[str, Any]:
        return dict(self._described)

    def _describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "backend": {
                "slot": self.reader.describe(),
                "explainer": None if self.explainer is None else self.explainer.describe(),
            },
            "config": {
                "template": self.reader.template.text,
                "template_version": self.reader.template.version,
                "positive": list(self.reader.verbalizer.positive),
                "negative": list(self.reader.verbalizer.negative),
                "readout": self.readout,
                "explanation": "none" if self.explainer is None else self.explainer.source,
            },
        }

    def close(self) -> None:
        if self.explainer is not None:
            self.explainer.close()
        if self._owns_reader:
            self.reader.model = None

    def __repr__(self) -> str:
        source = "none" if self.explainer is None else self.explainer.source
        return f"SlotJudge(model={self.model_id!r}, reader={self.reader.runtime!r}, explanation={source!r})"

    def judge_batch(self, items: Sequence[Item], *, on_invalid: OnInvalid = "raise") -> list[list[Judgment]]:
        checked, positions, invalid = self._check(items, on_invalid)
        todo = _explainable(checked)
        explained = self.explainer.explain(todo) if self.explainer is not None and todo else _unexplained(todo)
        reads = self._read(todo, explained)
        return self._assemble(len(items), checked, positions, invalid, explained, reads)

    async def ajudge_batch(self, items: Sequence[Item], *, on_invalid: OnInvalid = "raise") -> list[list[Judgment]]:
        checked, positions, invalid = await asyncio.to_thread(self._check, items, on_invalid)
        todo = _explainable(checked)
        explained = await self.explainer.aexplain(todo) if self.explainer is not None and todo else _unexplained(todo)
        reads = await asyncio.to_thread(self._read, todo, explained)
        return self._assemble(len(items), checked, positions, invalid, explained, reads)

    # -- steps ---------------------------------------------------------------------------------------------------------
    def _check(
        self, items: Sequence[Item], on_invalid: OnInvalid
    ) -> tuple[list[tuple[str, list[str]]], list[int], dict[int, list[Judgment]]]:
        return split_items(items, on_invalid, self._invalid_row)

    def _invalid_row(self, item: object, count: int, problem: Exception) -> list[Judgment]:
        record = self._record(None, None)
        return [
            self._judgment(j, Status.ERROR, None, f"invalid input: {problem}", record, Usage()) for j in range(count)
        ]

    def _read(self, todo: list[tuple[str, list[str]]], explained: list[list[Explained]]) -> list[list[Any]]:
        inputs: list[SlotInput] = []
        for (query, responses), row in zip(todo, explained, strict=True):
            for response, explanation in zip(responses, row, strict=True):
                if explanation.text is not None:
                    inputs.append(SlotInput(query, response, explanation.text))
        reads = iter(self.reader.read(inputs) if inputs else [])
        return [[next(reads) if e.text is not None else None for e in row] for row in explained]

    def _record(self, explained: Explained | None, read: Any) -> SlotRecord:
        source = "none" if self.explainer is None else self.explainer.source
        text = None if explained is None or self.explainer is None else explained.text
        base = SlotRecord(
            explanation=text,
            explanation_source=source,  # type: ignore[arg-type]
            readout=self.readout,
            ce_rm_score=None if explained is None else explained.ce_rm_score,
        )
        if read is None or isinstance(read, SlotFailure):
            return base
        return dataclasses.replace(
            base,
            log_p_positive=read.log_p_positive,
            log_p_negative=read.log_p_negative,
            word_log_probs=read.word_log_probs,
            truncated=bool(read.warnings),
        )

    def _judgment(
        self,
        index: int,
        status: Status,
        score: float | None,
        reason: str | None,
        record: SlotRecord,
        usage: Usage,
        warnings: tuple[str, ...] = (),
    ) -> Judgment:
        sampling = {} if self.explainer is None else self.explainer.sampling
        provenance = Provenance(
            model=self.reader.model_id,
            backend=self.reader.runtime,
            prompt_version=self.reader.template.version,
            criteria_sampling={},
            evaluation_sampling=sampling,
            seed=None,
            k=1,
            criteria_usage=Usage(),
            evaluation_usage=usage,
            score_readout=self.readout,
            backend_settings=self._described["backend"],
        )
        return Judgment(index, status, score, reason, (), provenance, warnings, None, record)

    def _assemble(
        self,
        size: int,
        checked: list[tuple[str, list[str]]],
        positions: list[int],
        invalid: dict[int, list[Judgment]],
        explained: list[list[Explained]],
        reads: list[list[Any]],
    ) -> list[list[Judgment]]:
        rows: dict[int, list[Judgment]] = dict(invalid)
        flat_explained = iter(zip(explained, reads, strict=True))
        explainable = {n for n, (_, responses) in enumerate(checked) if any(_readable(r) is None for r in responses)}
        for n, (position, (_, responses)) in enumerate(zip(positions, checked, strict=True)):
            row_explained, row_reads = next(flat_explained) if n in explainable else ([], [])
            pending = iter(zip(row_explained, row_reads, strict=True))
            row: list[Judgment] = []
            for j, response in enumerate(responses):
                problem = _readable(response)
                if problem is not None:
                    row.append(self._judgment(j, Status.UNSCORABLE, None, problem, self._record(None, None), Usage()))
                    continue
                explanation, read = next(pending)
                record = self._record(explanation, read)
                if explanation.text is None:
                    status = Status.ERROR if explanation.errored else Status.UNSCORABLE
                    row.append(self._judgment(j, status, None, explanation.failure, record, explanation.usage))
                    continue
                if isinstance(read, SlotFailure):
                    status = Status.UNSCORABLE if read.unscorable else Status.ERROR
                    row.append(
                        self._judgment(j, status, None, read.reason, record, explanation.usage, explanation.warnings)
                    )
                    continue
                score = slot_reward(read.log_p_positive, read.log_p_negative, self.readout)
                warnings = tuple(dict.fromkeys((*explanation.warnings, *read.warnings)))
                row.append(self._judgment(j, Status.SCORED, score, None, record, explanation.usage, warnings))
            rows[position] = row
        return [rows[n] for n in range(size)]


def _readable(response: str) -> str | None:
    """Why a response cannot be judged at all (nothing to explain or read), or None."""
    if _is_blank(response):
        return _EMPTY_REASON
    if problem := _unicode_problem(response):
        return f"the response is {problem}"
    return None


def _explainable(checked: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """The items with their readable responses only (items with none are left out)."""
    out = [(query, [r for r in responses if _readable(r) is None]) for query, responses in checked]
    return [(query, responses) for query, responses in out if responses]


def _unexplained(todo: list[tuple[str, list[str]]]) -> list[list[Explained]]:
    return [[Explained("") for _ in responses] for _, responses in todo]


@dataclass(frozen=True)
class SlotJudgeConfig:
    """A slot judge described by settings (the ``--slot-judge`` YAML file; ``cerm train slot`` writes one beside the
    trained model). The explanation model is the CLI's ``--model``/``--backend`` (or the arguments of
    :func:`slot_judge_from_config`).

    * ``slot_model``: a masked LM folder or hub name (``reader="masked"``), or a causal LM (``reader="causal"``, the
      cloze baseline; ``"demo"`` is the embedded SmolLM2).
    * ``explanation``: ``"backend"`` (the explanation model writes one from ``explanation_prompt``), ``"ce-rm"`` (a
      CE-RM judge on the explanation model runs first; its evaluation text is the explanation) or ``"none"``
      (no stage 1; the default template then becomes :data:`~cerm.protocol.PLAIN_SLOT_TEMPLATE`).
    """

    slot_model: str
    reader: ReaderKind = "masked"
    template: str | None = None
    positive: tuple[str, ...] = ("good",)
    negative: tuple[str, ...] = ("bad",)
    readout: SlotReadout = "probability"
    explanation: ExplanationMode = "backend"
    explanation_prompt: str = DEFAULT_EXPLANATION_PROMPT
    explanation_system: str | None = None
    explanation_max_new_tokens: int = 128
    explanation_temperature: float = 0.0
    max_length: int | None = None
    batch_size: int = 16
    device: str = "cpu"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reader not in ("masked", "causal"):
            raise ValueError(f"reader must be 'masked' or 'causal', got {self.reader!r}")
        if self.explanation not in ("backend", "ce-rm", "none"):
            raise ValueError(f"explanation must be 'backend', 'ce-rm' or 'none', got {self.explanation!r}")
        for name in ("positive", "negative"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        self.slot_template()  # validate now, not at the model load
        self.verbalizer()
        ExplanationPrompt(self.explanation_prompt, self.explanation_system)

    def slot_template(self) -> SlotTemplate:
        if self.template is not None:
            return SlotTemplate(self.template)
        return SlotTemplate(PLAIN_SLOT_TEMPLATE if self.explanation == "none" else DEFAULT_SLOT_TEMPLATE)

    def verbalizer(self) -> Verbalizer:
        return Verbalizer(self.positive, self.negative)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SlotJudgeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown slot judge setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    @classmethod
    def from_yaml(cls, path: str | Path) -> SlotJudgeConfig:
        import yaml

        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"{path}: expected a mapping of slot judge settings")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))
        return data


def slot_reader_from_config(config: SlotJudgeConfig) -> SlotReader:
    reader_class = MaskedSlotReader if config.reader == "masked" else CausalSlotReader
    return reader_class(
        config.slot_model,
        template=config.slot_template(),
        verbalizer=config.verbalizer(),
        max_length=config.max_length,
        batch_size=config.batch_size,
        device=config.device,
    )


def slot_judge_from_config(
    config: SlotJudgeConfig,
    *,
    model: str | Backend = "demo",
    backend: str = "hf",
    judge_config: JudgeConfig | None = None,
    cache: CriteriaCache | str | None = None,
    **backend_kwargs: Any,
) -> SlotJudge:
    """The :class:`SlotJudge` ``config`` describes; ``model``/``backend`` (and ``backend_kwargs``) run stage 1, as a
    plain explanation model or as the CE-RM judge (``judge_config`` and ``cache`` then apply to it). A
    :class:`~cerm.backends.Backend` instance is used as is (and not closed with the judge)."""
    from cerm._slot._explain import BackendExplainer, CermExplainer

    reader = slot_reader_from_config(config)
    explainer: Explainer | None = None
    if config.explanation == "backend":
        from cerm.backends import SamplingParams, create_backend

        params = SamplingParams(
            max_new_tokens=config.explanation_max_new_tokens, temperature=config.explanation_temperature
        )
        prompt = ExplanationPrompt(config.explanation_prompt, config.explanation_system)
        if isinstance(model, Backend):
            explainer = BackendExplainer(model, prompt=prompt, params=params)
        else:
            built = create_backend(backend, model, **backend_kwargs)
            explainer = BackendExplainer(built, prompt=prompt, params=params, owns_backend=True)
    elif config.explanation == "ce-rm":
        from cerm._judge import Judge

        explainer = CermExplainer(
            Judge(model, backend=backend, config=judge_config, cache=cache, **backend_kwargs), owns_judge=True
        )
    return SlotJudge(reader, explainer, readout=config.readout, owns_reader=True)
