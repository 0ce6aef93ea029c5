"""Training the ESFP-RM slot model (``cerm train slot``): the masked LM learns to put the verbalizer's positive words at
the slot for good responses and the negative ones for bad responses.

Objectives (both on the HF ``Trainer``, subclassed at ``compute_loss`` only; the loop, optimiser, schedule,
checkpoints and resume are transformers'):

* preference pairs: a Bradley-Terry loss on the two slot margins, ``-log sigmoid(m(chosen) - m(rejected))`` with
  ``m = log p(positive) - log p(negative)`` at the slot (the ``log_odds`` score; the ``probability`` readout is
  monotone in it, so either readout ranks as trained);
* pointwise labels: cross-entropy over the two verbalizer classes (their log-probabilities renormalised to the pair).

Explanations (when the template has ``{explanation}``) come from stage 1, exactly as the judge will make them
(a backend from the explanation prompt, or CE-RM's evaluation), and are cached in a JSONL file keyed by the explainer
and the text, so a rerun or a resume never generates them again. An example whose explanation failed is left out and
counted. Optional NLI pre-adaptation runs first on NLI rows in the same slot format (premise as the query, hypothesis
as the response, entailment -> positive word, contradiction -> negative word, neutral left out), as pointwise
cross-entropy. The output folder holds ``model/`` (the trained slot model and tokenizer), ``slot_judge.yaml``
(``cerm eval --slot-judge`` and ``SlotJudgeConfig.from_yaml`` load it) and ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cerm._errors import ConfigurationError
from cerm._slot._encode import SlotInput
from cerm._slot._explain import Explainer
from cerm._slot._judge import ExplanationMode, ReaderKind, SlotJudgeConfig, slot_reader_from_config
from cerm._slot._readers import SlotReader
from cerm.protocol import SlotReadout
from cerm.training._manifest import write_manifest
from cerm.training._pairs import PreferencePair
from cerm.training._settings import settings_from_mapping

logger = logging.getLogger("cerm")

_POSITIVE_LABELS = {True, "1", "true", "good", "positive", "chosen", "entailment"}
_NEGATIVE_LABELS = {False, "0", "false", "bad", "negative", "rejected", "contradiction"}


@dataclass(frozen=True)
class SlotTrainConfig:
    """Settings of slot-model training (``cerm train slot``; YAML keys are these field names).

    Data: ``pairs`` (preference pair files, any format :func:`cerm.training.load_pairs` reads), ``checkable_pairs``
    (that many seeded pairs from :func:`cerm.training.checkable_pairs`' train split), ``labels`` (JSONL rows
    ``{"query", "response", "label"}``, label true/false, 1/0 or a verbalizer class name), ``nli`` (JSONL rows
    ``{"premise", "hypothesis", "label"}`` for the optional pre-adaptation, ``nli_epochs`` over them).
    """

    model: str
    output_dir: str
    reader: ReaderKind = "masked"
    template: str | None = None
    positive: tuple[str, ...] = ("good",)
    negative: tuple[str, ...] = ("bad",)
    readout: SlotReadout = "probability"
    pairs: tuple[str, ...] = ()
    checkable_pairs: int = 0
    checkable_seed: int = 0
    labels: tuple[str, ...] = ()
    nli: tuple[str, ...] = ()
    nli_epochs: float = 1.0
    explanation: ExplanationMode = "none"
    explanation_model: str = "demo"
    explanation_backend: str = "hf"
    explanation_max_new_tokens: int = 128
    explanation_cache: str | None = None
    learning_rate: float = 5e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 50
    save_total_limit: int | None = 2
    max_length: int | None = None
    resume_from_checkpoint: bool = True
    use_cpu: bool = False
    report_to: str = "none"
    trainer_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("positive", "negative", "pairs", "labels", "nli"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.checkable_pairs < 0:
            raise ConfigurationError("checkable_pairs must be >= 0")
        self.judge_config()  # template, verbalizer and modes are checked now, before any model loads

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SlotTrainConfig:
        try:
            return settings_from_mapping(cls, values, "slot")
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"slot config: {exc}") from exc

    def judge_config(self, slot_model: str | None = None) -> SlotJudgeConfig:
        """The slot judge this training makes (on ``slot_model``; default the model trained from)."""
        return SlotJudgeConfig(
            slot_model=slot_model or self.model,
            reader=self.reader,
            template=self.template,
            positive=self.positive,
            negative=self.negative,
            readout=self.readout,
            explanation=self.explanation,
            explanation_max_new_tokens=self.explanation_max_new_tokens,
            max_length=self.max_length,
            batch_size=self.per_device_train_batch_size,
        )


@dataclass(frozen=True)
class SlotTrainResult:
    output_dir: str
    model_dir: str
    judge_config: str
    examples: int
    dropped: int
    nli_examples: int
    nli_steps: int
    steps: int
    final_loss: float | None
    log_history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Example:
    kind: Literal["pair", "point"]
    query: str
    a: str
    b: str = ""
    explanation_a: str = ""
    explanation_b: str = ""
    label: int = -1  # point: 0 positive class, 1 negative class

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ExplanationCache:
    """Stage-1 explanations in a JSONL file, keyed by the explainer's description and the (query, response) text.

    Only successful explanations are stored: a failed one is generated again next time."""

    def __init__(self, path: Path, explainer: Explainer) -> None:
        self.path = path
        self.explainer = explainer
        self._salt = json.dumps(explainer.describe(), sort_keys=True, default=str)
        self._texts: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self._texts[row["key"]] = row["explanation"]

    def key(self, query: str, response: str) -> str:
        return hashlib.sha256(json.dumps([self._salt, query, response]).encode()).hexdigest()

    def fill(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """The explanation of every (query, response) (None where stage 1 failed), generating only the missing ones
        in one explainer call and appending them to the file."""
        missing = list(dict.fromkeys(p for p in pairs if self.key(*p) not in self._texts))
        failures: set[tuple[str, str]] = set()
        if missing:
            grouped: dict[str, list[str]] = {}
            for query, response in missing:
                grouped.setdefault(query, []).append(response)
            items = list(grouped.items())
            logger.info("slot training: generating %d explanations (%d cached)", len(missing), len(self._texts))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                for (query, responses), row in zip(items, self.explainer.explain(items), strict=True):
                    for response, explained in zip(responses, row, strict=True):
                        if explained.text is None:
                            failures.add((query, response))
                            continue
                        key = self.key(query, response)
                        self._texts[key] = explained.text
                        handle.write(json.dumps({"key": key, "explanation": explained.text}, ensure_ascii=False) + "\n")
        return {p: None if p in failures else self._texts.get(self.key(*p)) for p in pairs}


def _label(value: Any, where: str) -> int:
    probe = value.strip().lower() if isinstance(value, str) else value
    if probe in _POSITIVE_LABELS:
        return 0
    if probe in _NEGATIVE_LABELS:
        return 1
    raise ConfigurationError(f"{where}: label {value!r} is neither positive nor negative")


def _read_rows(path: str) -> list[dict[str, Any]]:
    from cerm._jsonl import iter_json_lines

    if not Path(path).is_file():
        raise ConfigurationError(f"slot training data file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for where, row in iter_json_lines(handle, path, ConfigurationError):
            if not isinstance(row, dict):
                raise ConfigurationError(f"{where}: expected a JSON object")
            rows.append(row)
    return rows


def _pairs(config: SlotTrainConfig, given: Sequence[PreferencePair] | None) -> list[PreferencePair]:
    if given is not None:
        return list(given)
    out: list[PreferencePair] = []
    if config.pairs:
        from cerm.training._load import load_pairs

        for source in config.pairs:
            out.extend(load_pairs(source))
    if config.checkable_pairs:
        from cerm.training._checkable import checkable_pairs

        out.extend(checkable_pairs(config.checkable_pairs, seed=config.checkable_seed, split="train"))
    return out


def _points(config: SlotTrainConfig) -> list[tuple[str, str, int]]:
    out = []
    for source in config.labels:
        for n, row in enumerate(_read_rows(source)):
            where = f"{source} row {n + 1}"
            if not isinstance(row.get("query"), str) or not isinstance(row.get("response"), str):
                raise ConfigurationError(f"{where}: needs string 'query' and 'response'")
            out.append((row["query"], row["response"], _label(row.get("label"), where)))
    return out


def _nli(config: SlotTrainConfig) -> list[_Example]:
    out = []
    for source in config.nli:
        for n, row in enumerate(_read_rows(source)):
            label = str(row.get("label", "")).strip().lower()
            if label in ("neutral", "2"):
                continue
            index = {"entailment": 0, "0": 0, "contradiction": 1, "1": 1}.get(label)
            if index is None:
                raise ConfigurationError(f"{source} row {n + 1}: NLI label {row.get('label')!r} is not an NLI label")
            out.append(_Example("point", str(row["premise"]), str(row["hypothesis"]), label=index))
    return out


def build_explainer(config: SlotTrainConfig) -> Explainer | None:
    """The stage-1 explainer the trained judge will use (None when the template has no explanation)."""
    if config.explanation == "none":
        return None
    from cerm._slot._explain import BackendExplainer, CermExplainer

    judge_config = config.judge_config()

    if config.explanation == "backend":
        from cerm.backends import SamplingParams, create_backend
        from cerm.protocol import ExplanationPrompt

        backend = create_backend(config.explanation_backend, config.explanation_model)
        params = SamplingParams(max_new_tokens=config.explanation_max_new_tokens)
        prompt = ExplanationPrompt(judge_config.explanation_prompt, judge_config.explanation_system)
        return BackendExplainer(backend, prompt=prompt, params=params, owns_backend=True)
    from cerm._judge import Judge

    return CermExplainer(Judge(config.explanation_model, backend=config.explanation_backend), owns_judge=True)


def build_examples(
    config: SlotTrainConfig, pairs: Sequence[PreferencePair], points: Sequence[tuple[str, str, int]]
) -> tuple[list[_Example], int]:
    """Training examples with their explanations (cached), and how many were dropped for a failed explanation."""
    explainer = build_explainer(config)
    explanations: dict[tuple[str, str], str | None] = {}
    if explainer is not None:
        cache_path = Path(config.explanation_cache or Path(config.output_dir) / "explanations.jsonl")
        wanted = [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)] + [(q, r) for q, r, _ in points]
        try:
            explanations = ExplanationCache(cache_path, explainer).fill(wanted)
        finally:
            explainer.close()

    def text(query: str, response: str) -> str | None:
        return explanations.get((query, response)) if explainer is not None else ""

    examples: list[_Example] = []
    dropped = 0
    for pair in pairs:
        ea, eb = text(pair.prompt, pair.chosen), text(pair.prompt, pair.rejected)
        if ea is None or eb is None:
            dropped += 1
            continue
        examples.append(_Example("pair", pair.prompt, pair.chosen, pair.rejected, ea, eb))
    for query, response, label in points:
        e = text(query, response)
        if e is None:
            dropped += 1
            continue
        examples.append(_Example("point", query, response, explanation_a=e, label=label))
    return examples, dropped


def slot_loss(reader: SlotReader, model: Any, rows: Sequence[Mapping[str, Any]]) -> Any:
    """The mean loss of a batch of example rows: Bradley-Terry on the margins of pairs, cross-entropy over the
    verbalizer classes for pointwise rows (see the module docs)."""
    import torch
    import torch.nn.functional as F

    losses = []
    pairs = [r for r in rows if r["kind"] == "pair"]
    points = [r for r in rows if r["kind"] == "point"]
    if pairs:
        inputs = [SlotInput(r["query"], r["a"], r["explanation_a"]) for r in pairs]
        inputs += [SlotInput(r["query"], r["b"], r["explanation_b"]) for r in pairs]
        classes, _ = reader.class_log_probs(inputs, model)
        margins = classes[:, 0] - classes[:, 1]
        losses.append(-F.logsigmoid(margins[: len(pairs)] - margins[len(pairs) :]))
    if points:
        inputs = [SlotInput(r["query"], r["a"], r["explanation_a"]) for r in points]
        classes, _ = reader.class_log_probs(inputs, model)
        target = torch.tensor([int(r["label"]) for r in points], device=classes.device)
        losses.append(F.cross_entropy(classes, target, reduction="none"))
    return torch.cat(losses).mean()


def _trainer_class(transformers: Any, reader: SlotReader) -> Any:
    class SlotTrainer(transformers.Trainer):  # type: ignore[misc]
        """The HF Trainer with the slot loss; everything else (loop, optimiser, checkpoints, resume) is its own."""

        def compute_loss(
            self, model: Any, inputs: Mapping[str, Any], return_outputs: bool = False, **kwargs: Any
        ) -> Any:
            loss = slot_loss(reader, model, inputs["rows"])
            return (loss, None) if return_outputs else loss

    return SlotTrainer


def _collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"rows": rows}


def _train_stage(
    config: SlotTrainConfig,
    reader: SlotReader,
    examples: list[_Example],
    checkpoints: Path,
    *,
    epochs: float,
    max_steps: int,
    callbacks: Sequence[Any] = (),
) -> Any:
    import transformers
    from datasets import Dataset

    args = transformers.TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.per_device_train_batch_size,
        learning_rate=config.learning_rate,
        num_train_epochs=epochs,
        max_steps=max_steps,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to,
        use_cpu=config.use_cpu,
        remove_unused_columns=False,  # the rows are text: the slot loss tokenizes them itself
        dataloader_num_workers=0,
        **dict(config.trainer_args),
    )
    dataset = Dataset.from_list([e.row() for e in examples])
    trainer = _trainer_class(transformers, reader)(
        model=reader.model, args=args, train_dataset=dataset, data_collator=_collate, callbacks=list(callbacks)
    )
    resume = None
    if config.resume_from_checkpoint and checkpoints.is_dir():
        from transformers.trainer_utils import get_last_checkpoint

        resume = get_last_checkpoint(str(checkpoints))  # type: ignore[no-untyped-call]
        if resume:
            logger.info("slot training: resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def run_slot_training(
    config: SlotTrainConfig,
    pairs: Sequence[PreferencePair] | None = None,
    *,
    callbacks: Sequence[Any] = (),
) -> SlotTrainResult:
    """Train the slot model (see the module docs); ``pairs`` replaces the config's pair data."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_pairs = _pairs(config, pairs)
    points = _points(config)
    if not train_pairs and not points:
        raise ConfigurationError("slot training has no data: give pairs, checkable_pairs or labels")
    examples, dropped = build_examples(config, train_pairs, points)
    if not examples:
        raise ConfigurationError(f"no training example is left: stage 1 failed for all {dropped}")
    reader = slot_reader_from_config(config.judge_config())
    nli = _nli(config)
    nli_steps = 0
    if nli:
        logger.info("slot training: NLI pre-adaptation on %d rows", len(nli))
        adapted = _train_stage(config, reader, nli, out / "nli-checkpoints", epochs=config.nli_epochs, max_steps=-1)
        nli_steps = adapted.state.global_step
    trainer = _train_stage(
        config,
        reader,
        examples,
        out / "checkpoints",
        epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        callbacks=callbacks,
    )
    model_dir = out / "model"
    trainer.save_model(str(model_dir))
    reader.tokenizer.save_pretrained(str(model_dir))
    judge_yaml = out / "slot_judge.yaml"
    import yaml

    judge_yaml.write_text(yaml.safe_dump(config.judge_config(str(model_dir)).to_dict(), sort_keys=False))
    history = [dict(h) for h in trainer.state.log_history]
    losses = [h["loss"] for h in history if "loss" in h]
    stats = {
        "examples": len(examples),
        "pairs": sum(1 for e in examples if e.kind == "pair"),
        "points": sum(1 for e in examples if e.kind == "point"),
        "dropped_failed_explanation": dropped,
        "nli_examples": len(nli),
        "nli_steps": nli_steps,
        "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else None,
    }
    inputs = {"model": config.model, **{f"pairs:{p}": p for p in config.pairs}}
    write_manifest(out, stage="slot", config=config, inputs=inputs, outputs=["slot_judge.yaml"], stats=stats)
    return SlotTrainResult(
        output_dir=str(out),
        model_dir=str(model_dir),
        judge_config=str(judge_yaml),
        examples=len(examples),
        dropped=dropped,
        nli_examples=len(nli),
        nli_steps=nli_steps,
        steps=trainer.state.global_step,
        final_loss=losses[-1] if losses else None,
        log_history=history,
    )
