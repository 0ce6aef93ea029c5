"""Stage 2 of the slot judge: a language model reads the slot input and gives the verbalizer classes' log-probabilities.

Two readers, one interface (:class:`SlotReader`):

* :class:`MaskedSlotReader`: any ``AutoModelForMaskedLM`` (BERT, RoBERTa, ModernBERT, ...): the template's one
  ``{mask}`` becomes the tokenizer's mask token and the model's distribution there is read. A verbalizer word the
  tokenizer splits into L pieces is read with the slot widened to L mask tokens, as the sum of the L pieces'
  log-probabilities at their positions (one forward pass per distinct L; each piece is predicted with the others
  masked, the usual pattern-verbalizer approximation). Words of one piece, the default, need one pass in all.
* :class:`CausalSlotReader`: any ``AutoModelForCausalLM``: the template up to the mask is a cloze prompt and a word's
  log-probability is that of its pieces as the continuation (teacher-forced). The autoregressive baseline.

``class_log_probs`` is differentiable (training uses it under the HF Trainer); :meth:`SlotReader.read` runs it without
gradients in mini-batches and returns failures as values. torch and transformers are imported lazily.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cerm._errors import ConfigurationError, ModelNotFoundError
from cerm._slot._encode import Encoded, SlotInput, TemplateTooLong, encode, word_pieces
from cerm.protocol import SlotTemplate, Verbalizer

logger = logging.getLogger("cerm")


@dataclass(frozen=True)
class SlotRead:
    """The classes' log-probabilities at the slot for one input, each word's own, and any truncation warnings."""

    log_p_positive: float
    log_p_negative: float
    word_log_probs: tuple[tuple[str, float], ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlotFailure:
    """No read for this input: ``unscorable`` when the input itself cannot be read (it is the same on a retry),
    else the model call failed (an ERROR)."""

    reason: str
    unscorable: bool


def _resolve(model: str | Path) -> tuple[str, str]:
    """(path to load, readable model id); embedded names (``"demo"``) resolve to their local folder."""
    from cerm._embedded import embedded_model_id, embedded_model_path

    name = str(model)
    path = embedded_model_path(name)
    if path is not None:
        return str(path), embedded_model_id(name) or name
    return name, name


class SlotReader(abc.ABC):
    """A model that reads the verbalizer classes at a template's slot."""

    runtime: str = "hf"

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any = None,
        template: SlotTemplate | None = None,
        verbalizer: Verbalizer | None = None,
        max_length: int | None = None,
        batch_size: int = 16,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.template = template or SlotTemplate()
        self.verbalizer = verbalizer or Verbalizer()
        self.batch_size = batch_size
        self.device = device
        if isinstance(model, (str, Path)):
            path, self.model_id = _resolve(model)
            self.model, self.tokenizer = self._load(path, tokenizer)
        else:
            if tokenizer is None:
                raise TypeError("a model object needs its tokenizer (tokenizer=...)")
            self.model, self.tokenizer = model, tokenizer
            self.model_id = str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)
        self.model.to(device)
        self.model.eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        candidates = [v for v in (max_length, limit, tok_limit) if isinstance(v, int) and 0 < v < 10**8]
        if not candidates:
            raise ConfigurationError("the slot model's length limit is unknown: pass max_length")
        self.max_length = min(candidates)
        space = self.template.space_before_mask
        self.pieces = [word_pieces(self.tokenizer, word, space) for word in self.verbalizer.words]
        self._check()

    def _check(self) -> None:
        """Refuse a verbalizer whose words cannot be told apart by this tokenizer."""
        seen: dict[tuple[int, ...], str] = {}
        unknown = getattr(self.tokenizer, "unk_token_id", None)
        for word, ids in zip(self.verbalizer.words, self.pieces, strict=True):
            if unknown is not None and unknown in ids:
                raise ConfigurationError(f"the slot model's tokenizer does not know the verbalizer word {word!r}")
            other = seen.setdefault(tuple(ids), word)
            if other != word:
                raise ConfigurationError(f"verbalizer words {other!r} and {word!r} are the same tokens for this model")

    @abc.abstractmethod
    def _load(self, path: str, tokenizer: Any) -> tuple[Any, Any]: ...

    @abc.abstractmethod
    def word_log_probs(self, inputs: Sequence[SlotInput], model: Any = None) -> tuple[Any, list[tuple[str, ...]]]:
        """A ``[len(inputs), len(words)]`` tensor of each verbalizer word's log-probability at the slot (with
        gradients when enabled), and each input's truncation warnings. Raises :class:`TemplateTooLong`. ``model``:
        the module to run (a trainer's wrapped copy of :attr:`model`); default :attr:`model`."""

    def class_log_probs(self, inputs: Sequence[SlotInput], model: Any = None) -> tuple[Any, list[tuple[str, ...]]]:
        """``[len(inputs), 2]``: log p(positive), log p(negative) (log-sum-exp over each class's words)."""
        import torch

        words, warnings = self.word_log_probs(inputs, model)
        n_pos = len(self.verbalizer.positive)
        classes = torch.stack(
            [torch.logsumexp(words[:, :n_pos], dim=1), torch.logsumexp(words[:, n_pos:], dim=1)], dim=1
        )
        return classes, warnings

    def read(self, inputs: Sequence[SlotInput]) -> list[SlotRead | SlotFailure]:
        """Every input's read, ``batch_size`` at a time, without gradients. An input that cannot be read (its
        template does not fit the model) is an unscorable failure; a failing model call fails its mini-batch only."""
        import torch

        out: list[SlotRead | SlotFailure] = []
        words = self.verbalizer.words
        self.model.eval()  # a trainer may have left it in training mode (dropout on)
        for start in range(0, len(inputs), self.batch_size):
            chunk = list(inputs[start : start + self.batch_size])
            try:
                with torch.no_grad():
                    word_lp, warnings = self.word_log_probs(chunk)
                    n_pos = len(self.verbalizer.positive)
                    pos = torch.logsumexp(word_lp[:, :n_pos], dim=1)
                    neg = torch.logsumexp(word_lp[:, n_pos:], dim=1)
            except TemplateTooLong as exc:
                out.extend(SlotFailure(str(exc), unscorable=True) for _ in chunk)
                continue
            except (RuntimeError, MemoryError, ValueError) as exc:  # OOM, device errors: this chunk has no read
                logger.warning("slot model call failed for %d inputs: %s", len(chunk), exc)
                out.extend(SlotFailure(f"slot model call failed: {type(exc).__name__}: {exc}", False) for _ in chunk)
                continue
            rows = word_lp.tolist()
            for note in dict.fromkeys(w for item in warnings for w in item):
                logger.warning("slot input: %s", note)
            for i in range(len(chunk)):
                out.append(
                    SlotRead(
                        float(pos[i]), float(neg[i]), tuple(zip(words, map(float, rows[i]), strict=True)), warnings[i]
                    )
                )
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "model": self.model_id,
            "max_length": self.max_length,
            "device": self.device,
            "dtype": str(getattr(self.model, "dtype", "")),
            "word_pieces": dict(zip(self.verbalizer.words, self.pieces, strict=True)),
        }

    def _pad(self, sequences: list[list[int]]) -> tuple[Any, Any]:
        import torch

        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), int(pad), dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, : len(seq)] = 1
        return ids.to(self.model.device), attention.to(self.model.device)


class MaskedSlotReader(SlotReader):
    """The slot read by a masked language model (``AutoModelForMaskedLM``); see the module docs."""

    runtime = "hf-masked-lm"

    def _load(self, path: str, tokenizer: Any) -> tuple[Any, Any]:
        import transformers

        try:
            tok = transformers.AutoTokenizer.from_pretrained(tokenizer or path)
            model = transformers.AutoModelForMaskedLM.from_pretrained(path)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot load the masked LM {path!r}: {exc}") from exc
        if tok.mask_token_id is None:
            raise ConfigurationError(f"the tokenizer of {path!r} has no mask token: not a masked language model")
        return model, tok

    def word_log_probs(self, inputs: Sequence[SlotInput], model: Any = None) -> tuple[Any, list[tuple[str, ...]]]:
        import torch

        model = self.model if model is None else model
        mask_id = self.tokenizer.mask_token_id
        if mask_id is None:
            raise ConfigurationError("the slot model's tokenizer has no mask token")
        groups: dict[int, list[int]] = {}
        for index, ids in enumerate(self.pieces):
            groups.setdefault(len(ids), []).append(index)
        columns: dict[int, Any] = {}
        warnings: list[tuple[str, ...]] = [() for _ in inputs]
        widest = max(groups)
        for width, members in sorted(groups.items()):
            encoded: list[Encoded] = [
                encode(
                    self.tokenizer,
                    self.template,
                    item,
                    mask_tokens=[mask_id] * width,
                    max_length=self.max_length,
                    reserve=widest - width,
                )
                for item in inputs
            ]
            if width == min(groups):
                warnings = [e.warnings for e in encoded]
            ids, attention = self._pad([e.ids for e in encoded])
            logits = model(input_ids=ids, attention_mask=attention).logits
            rows = torch.arange(len(encoded), device=logits.device)
            for index in members:
                total = torch.zeros(len(encoded), device=logits.device, dtype=logits.dtype)
                for piece, token in enumerate(self.pieces[index]):
                    positions = torch.tensor([e.mask_positions[piece] for e in encoded], device=logits.device)
                    log_probs = torch.log_softmax(logits[rows, positions].float(), dim=-1)
                    total = total + log_probs[:, token]
                columns[index] = total
        return torch.stack([columns[i] for i in range(len(self.pieces))], dim=1), warnings


class CausalSlotReader(SlotReader):
    """The slot read by a causal LM as a cloze (``AutoModelForCausalLM``): the autoregressive baseline. Text after the
    template's mask is not used: the model reads the words as the continuation of the text before it."""

    runtime = "hf-causal-lm"

    def _load(self, path: str, tokenizer: Any) -> tuple[Any, Any]:
        import transformers

        try:
            tok = transformers.AutoTokenizer.from_pretrained(tokenizer or path)
            model = transformers.AutoModelForCausalLM.from_pretrained(path)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot load the causal LM {path!r}: {exc}") from exc
        return model, tok

    def word_log_probs(self, inputs: Sequence[SlotInput], model: Any = None) -> tuple[Any, list[tuple[str, ...]]]:
        import torch

        model = self.model if model is None else model
        contexts = list(dict.fromkeys(tuple(ids[:-1]) for ids in self.pieces))
        longest = max(len(ids) for ids in self.pieces)
        encoded = [
            encode(self.tokenizer, self.template, item, mask_tokens=None, max_length=self.max_length - longest)
            for item in inputs
        ]
        sequences: list[list[int]] = []
        where: dict[tuple[int, tuple[int, ...]], int] = {}
        for row, enc in enumerate(encoded):
            for context in contexts:
                where[(row, context)] = len(sequences)
                sequences.append(enc.ids + list(context))
        ids, attention = self._pad(sequences)
        log_probs = torch.log_softmax(model(input_ids=ids, attention_mask=attention).logits.float(), dim=-1)
        rows = []
        for row, enc in enumerate(encoded):
            values = []
            for pieces in self.pieces:
                seq = where[(row, tuple(pieces[:-1]))]
                start = len(enc.ids) - 1  # the logits at the last prefix token predict the first piece
                steps = [log_probs[seq, start + i, token] for i, token in enumerate(pieces)]
                values.append(torch.stack(steps).sum())
            rows.append(torch.stack(values))
        return torch.stack(rows), [e.warnings for e in encoded]
