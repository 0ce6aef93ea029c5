"""Local Hugging Face models through transformers: batched, left-padded generation with the model's own chat template.

Install with ``pip install 'ce-rm[hf]'`` (``'ce-rm[peft]'`` for adapters and 4-bit loading).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cerm._embedded import DEMO_MODEL, embedded_model_id, embedded_model_path
from cerm._errors import BackendUnavailableError, ConfigurationError, ModelNotFoundError
from cerm.backends._base import Backend, Completion, SamplingParams, TokenLogprob
from cerm.backends._identity import folder_digest
from cerm.backends._shared_prefix import PrefixPlan, order_for_sharing, plan_shared_prefix
from cerm.protocol import Conversation, RenderedChat, render_chat, tokenize_chat, tokenize_text
from cerm.protocol import chat_template_kwargs as protocol_template_kwargs  # the constructor has an argument so named

logger = logging.getLogger("cerm")

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


# How out-of-memory errors read when they are not torch.OutOfMemoryError (older torch, cuBLAS/cuDNN, MPS, ROCm).
_OOM_MESSAGES = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed", "hip out of memory")
_CERM_ROOT = Path(__file__).resolve().parents[1]


def _raised_in_cerm(exc: BaseException) -> bool:
    """True when the innermost Python frame of ``exc``'s traceback is in cerm's own source."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_CERM_ROOT)


def _import_hf() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendUnavailableError("the hf backend needs torch and transformers: pip install 'ce-rm[hf]'") from exc
    return torch, transformers


class HFBackend(Backend):
    """Generation with a local transformers causal LM.

    Args:
        model: a local folder, a hub id already in the local cache, ``"demo"`` for the embedded demo judge
            (SmolLM2-135M + cerm's LoRA; ``"demo-sft"``: before GRPO) or ``"demo-base"`` for its untrained base. A
            training output folder with an adapter (``cerm train sft``) loads as its recorded base model plus that
            adapter.
        tokenizer: tokenizer folder or id when it differs from ``model``.
        adapter: a peft adapter folder (LoRA / QLoRA) applied on top of ``model``.
        load_in_4bit: load the base weights as 4-bit NF4 through bitsandbytes (works on CPU and CUDA).
        dtype: ``"auto"`` (bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU) or a dtype name.
        device: ``"cuda"``, ``"cpu"``, ... ; default: CUDA when available.
        batch_size: sequences per ``generate`` call. Larger is faster until memory runs out.
        chat_template: a Jinja template to use instead of the tokenizer's own (for models that lack one).
        chat_template_kwargs: extra variables for the template. ``enable_thinking=False`` is passed automatically
            when the template knows that variable (Qwen3), as the CE-RM protocol requires.
        trust_remote_code: off unless you ask for it.
        revision, gguf_file: passed to ``from_pretrained``.
        share_prefix: compute a prompt prefix shared by several rows of a batch once, then only each row's suffix
            (the N evaluation prompts of one query share about 500 tokens). On by default for models whose cache is
            plain full attention; set False to always prefill every row in full.
    """

    name = "hf"

    def __init__(
        self,
        model: str = DEMO_MODEL,
        *,
        tokenizer: str | None = None,
        adapter: str | None = None,
        load_in_4bit: bool = False,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int = 8,
        chat_template: str | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        gguf_file: str | None = None,
        share_prefix: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        torch, transformers = _import_hf()
        self._torch = torch
        self._lock = threading.Lock()
        self._batch_size = batch_size
        if adapter is None:
            # A training output folder holding an adapter (cerm's SFT output, or any peft adapter folder) loads as
            # its base model plus that adapter.
            from cerm.training._artifacts import resolve_trained_dir

            trained = resolve_trained_dir(model)
            if trained is not None:
                model, adapter = trained
                if tokenizer is None and (Path(adapter) / "tokenizer_config.json").is_file():
                    tokenizer = adapter  # the folder keeps the tokenizer and template it was trained with
        self._model_id = embedded_model_id(model) or model
        if adapter:
            self._model_id += f"+{adapter}"
        embedded = embedded_model_path(model)
        path = str(embedded) if embedded is not None else model
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = self._resolve_dtype(dtype)
        common: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
        if gguf_file:
            common["gguf_file"] = gguf_file

        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer or path, **common)
            load_kwargs: dict[str, Any] = {"dtype": torch_dtype, **common}
            if load_in_4bit:
                load_kwargs["quantization_config"] = self._nf4_config(transformers, torch_dtype)
                load_kwargs["device_map"] = {"": self._device}
            model_obj = transformers.AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
        except (OSError, ValueError) as exc:
            hint = "" if Path(path).exists() else " (not a local folder; model hubs are only reachable if cached)"
            raise ModelNotFoundError(f"could not load model {model!r}{hint}: {exc}") from exc
        if not load_in_4bit:
            model_obj = model_obj.to(self._device)
        if adapter:
            model_obj = self._load_adapter(model_obj, adapter)
        model_obj.eval()
        self.model = model_obj

        if chat_template is not None:
            self.tokenizer.chat_template = chat_template
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigurationError(
                f"model {model!r} has no chat template; pass chat_template=... (a Jinja string) to HFBackend"
            )
        self._template_kwargs = protocol_template_kwargs(self.tokenizer.chat_template, chat_template_kwargs)

        self.tokenizer.padding_side = "left"  # decoder-only batching: new tokens must line up on the right
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._eos_ids = self._collect_eos_ids()
        self._share_prefix = share_prefix and self._cache_allows_prefix_sharing()
        # Read once: transformers answers by inspecting forward()'s signature.
        self._logits_to_keep = bool(getattr(self._causal_lm(), "_supports_logits_to_keep", lambda: False)())
        custom_template = chat_template.encode("utf-8") if chat_template is not None else None
        # transformers 5.2x renamed forward()'s and generate()'s ``past_key_values`` to ``cache`` (the old name warns on
        # every call, and goes in 5.40); older versions only know the old name. Read once, from the model's signature.
        self._cache_kwarg = (
            "cache" if "cache" in inspect.signature(self._causal_lm().forward).parameters else "past_key_values"
        )
        self._settings = {
            "dtype": str(torch_dtype).replace("torch.", ""),
            "device": self._device,
            "load_in_4bit": load_in_4bit,
            "quantization": "bitsandbytes-nf4" if load_in_4bit else None,
            "adapter": adapter,
            "adapter_sha256": folder_digest(Path(adapter)) if adapter else None,
            "revision": revision,
            # The hub commit the weights were read from (transformers records it for cached hub models).
            "commit": getattr(self.model.config, "_commit_hash", None) if embedded_model_id(model) is None else None,
            "tokenizer": tokenizer,
            "gguf_file": gguf_file,
            "chat_template_sha256": hashlib.sha256(custom_template).hexdigest() if custom_template else None,
            "chat_template_kwargs": dict(self._template_kwargs),
            "batch_size": batch_size,
            "share_prefix": self._share_prefix,
            "transformers": transformers.__version__,
        }

    # -- loading helpers -------------------------------------------------------------------------------------------
    def _resolve_dtype(self, dtype: str) -> Any:
        torch = self._torch
        if dtype == "auto":
            if self._device.startswith("cuda"):
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.float32  # CPU matmuls are fastest and exact in fp32 for models this size
        if dtype not in _DTYPES:
            raise ConfigurationError(f"unknown dtype {dtype!r}; use 'auto' or one of {sorted(set(_DTYPES))}")
        return getattr(torch, _DTYPES[dtype])

    @staticmethod
    def _nf4_config(transformers: Any, compute_dtype: Any) -> Any:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailableError("4-bit loading needs bitsandbytes: pip install 'ce-rm[peft]'") from exc
        return transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )

    @staticmethod
    def _load_adapter(model: Any, adapter: str) -> Any:
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise BackendUnavailableError("adapters need peft: pip install 'ce-rm[peft]'") from exc
        try:
            return PeftModel.from_pretrained(model, adapter)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"could not load adapter {adapter!r}: {exc}") from exc

    def _cache_allows_prefix_sharing(self) -> bool:
        """Shared-prefix prefill reindexes the KV cache rows and leaves padding holes between prefix and suffix; that
        is exact for full-attention layers only (a sliding window or a recurrent state would see the holes). It
        relies on transformers 5's cache layers and on generate() continuing a filled cache; older versions prefill
        every row in full."""
        import transformers

        major = int(transformers.__version__.split(".", 1)[0])
        if major < 5:
            logger.info("shared-prefix prefill is off: it needs transformers >= 5 (found %s)", transformers.__version__)
            return False
        try:
            from transformers.cache_utils import DynamicCache, DynamicLayer

            layers = DynamicCache(config=self.model.config).layers
        except (ImportError, TypeError, ValueError, KeyError, AttributeError) as exc:
            logger.info("shared-prefix prefill is off for %s: %s", self._model_id, exc)
            return False
        plain = bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
        if not plain:
            logger.info("shared-prefix prefill is off for %s: its cache is not plain full attention", self._model_id)
        return plain

    def _collect_eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        configured = self.model.generation_config.eos_token_id
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return frozenset(ids)

    # -- Backend interface -----------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_length(self) -> int | None:
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if value else None

    @property
    def supports_logprobs(self) -> bool:
        return True

    @property
    def supports_prefill(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._settings}

    def count_tokens(self, text: str) -> int | None:
        # Untrusted text is measured as text: a literal "<|im_end|>" counts as the tokens it gets inside the prompt.
        return len(tokenize_text(self.tokenizer, text))

    def render(self, conversation: Conversation) -> str:
        """The exact prompt string the model sees: the chat template with the generation prompt appended, or, when
        the last message is from the assistant (prefill), the template up to the end of that message's content so
        the model continues it."""
        return self._render_chat(conversation).text

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """The prompt's token ids: the template's markup with its special tokens, every message content as plain text
        (a response that writes ``<|im_end|>`` cannot end its turn or forge another)."""
        return tokenize_chat(self.tokenizer, self._render_chat(conversation))

    def _render_chat(self, conversation: Conversation) -> RenderedChat:
        prefill = bool(conversation) and conversation[-1]["role"] == "assistant"
        return render_chat(
            self.tokenizer,
            conversation,
            generation="continue" if prefill else "prompt",
            template_kwargs=self._template_kwargs,
        )

    def count_conversation_tokens(self, conversation: Conversation) -> int | None:
        return len(self.prompt_ids(conversation))

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        with self._lock, self._torch.inference_mode():
            return self._generate_locked(conversations, params)

    def close(self) -> None:
        if getattr(self, "model", None) is None:
            return
        self.model = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    # -- generation --------------------------------------------------------------------------------------------------
    def _generate_locked(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        if self.model is None:
            raise RuntimeError("this HFBackend was closed")
        results: list[list[Completion | None]] = [[None] * params.n for _ in conversations]
        limit = self.context_length
        jobs: list[tuple[int, int, list[int]]] = []  # (conversation index, sample index, prompt ids)
        for i, conv in enumerate(conversations):
            try:
                ids = self.prompt_ids(conv)
            except (TypeError, ValueError) as exc:  # e.g. a lone surrogate the tokenizer cannot encode: this one only
                results[i] = [Completion.failed(f"could not tokenize the conversation: {exc}")] * params.n
                continue
            if limit is not None and len(ids) + params.max_new_tokens > limit:
                failure = Completion(
                    text="",
                    finish_reason="error",
                    prompt_tokens=len(ids),
                    error=f"prompt of {len(ids)} tokens + max_new_tokens={params.max_new_tokens} exceeds the "
                    f"model context of {limit} tokens",
                )
                results[i] = [failure] * params.n
                continue
            jobs.extend((i, s, ids) for s in range(params.n))

        # Rows that share a long prompt prefix go in the same batch; otherwise longest first, so each batch pads
        # little and memory trouble shows up on the first batch.
        jobs = [jobs[j] for j in order_for_sharing([ids for _, _, ids in jobs])]
        for start in range(0, len(jobs), self._batch_size):
            batch = jobs[start : start + self._batch_size]
            outputs = self._generate_or_fail([ids for _, _, ids in batch], params, batch_index=start)
            for (i, s, _), completion in zip(batch, outputs, strict=True):
                results[i][s] = completion
        return [[c for c in row if c is not None] for row in results]

    def _generate_or_fail(self, prompts: list[list[int]], params: SamplingParams, batch_index: int) -> list[Completion]:
        """One batch, where only what belongs to this batch becomes failed completions: running out of memory (the
        batch is split in halves and retried first, so one long prompt fails alone) and an input the model's library
        refuses. Any other exception, and every exception raised by cerm's own code, is a bug and propagates."""
        try:
            return self._generate_batch(prompts, params, batch_index=batch_index)
        except Exception as exc:
            kind = self._batch_failure(exc)
            if kind is None:
                raise
            if kind == "out of memory" and len(prompts) > 1:
                logger.warning("hf generation ran out of memory for %d sequences; retrying in halves", len(prompts))
                self._release_cached_memory()
                half = len(prompts) // 2
                return self._generate_or_fail(prompts[:half], params, batch_index) + self._generate_or_fail(
                    prompts[half:], params, batch_index + half
                )
            logger.warning("hf generation failed for %d sequences (%s): %s", len(prompts), kind, exc)
            return [Completion.failed(f"{kind}: {type(exc).__name__}: {exc}") for _ in prompts]

    def _batch_failure(self, exc: BaseException) -> str | None:
        """What kind of per-batch failure ``exc`` is, or None when it must propagate."""
        if isinstance(exc, self._torch.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)
        ):
            return "out of memory"
        # A bad input refused by torch or transformers (a token id outside the embedding, a shape the model cannot
        # take): raised from their code, not ours. The same exception types raised in cerm are bugs.
        if isinstance(exc, (RuntimeError, ValueError, IndexError)) and not _raised_in_cerm(exc):
            return "input refused by the model"
        return None

    def _release_cached_memory(self) -> None:
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, batch_index: int) -> list[Completion]:
        torch = self._torch
        plan = plan_shared_prefix(prompts) if self._share_prefix else None
        cache = None
        if plan is not None:
            input_ids, attention_mask, cache = self._prefill_shared_prefixes(plan)
        else:
            input_ids, attention_mask = self._left_pad(prompts, max(len(p) for p in prompts))
            input_ids, attention_mask = input_ids.to(self.model.device), attention_mask.to(self.model.device)
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": sorted(self._eos_ids),
            "return_dict_in_generate": True,
        }
        if cache is not None:
            gen_kwargs[self._cache_kwarg] = cache  # generate() then computes only the uncached suffix positions
        if params.greedy:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            gen_kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        recorder = None
        if params.top_logprobs is not None:
            recorder = _StepLogprobRecorder(torch, params.top_logprobs)
            handle = self._causal_lm().register_forward_hook(recorder.hook, with_kwargs=True)
        try:
            with self._seeded(None if params.seed is None else params.seed + batch_index):
                out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs)
        finally:
            if recorder is not None:
                handle.remove()
        new_tokens = out.sequences[:, input_ids.shape[1] :].tolist()
        if recorder is not None:
            recorder.finish(out.sequences[:, -1], steps=out.sequences.shape[1] - input_ids.shape[1])

        completions = []
        for row, prompt in enumerate(prompts):
            tokens = new_tokens[row]
            stop_at = next((j for j, t in enumerate(tokens) if t in self._eos_ids), None)
            kept = tokens if stop_at is None else tokens[:stop_at]
            completions.append(
                Completion(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True),
                    finish_reason="length" if stop_at is None else "stop",
                    prompt_tokens=len(prompt),
                    completion_tokens=len(kept) + (0 if stop_at is None else 1),
                    logprobs=None if recorder is None else self._logprob_row(recorder, row, kept),
                )
            )
        return completions

    @contextlib.contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        """Sampling seeded with ``seed`` (per batch, so a re-run with the same inputs and batch size reproduces the
        same samples) without touching the process's random stream: transformers' generate() samples from the global
        torch generator and takes no generator of its own, so the global state of the model's device (and the CPU)
        is saved before and restored after. Unseeded sampling draws from the global stream as usual."""
        if seed is None:
            yield
            return
        device = self.model.device
        devices = [device.index if device.index is not None else 0] if device.type == "cuda" else []
        with self._torch.random.fork_rng(devices=devices, device_type=device.type if device.type == "cuda" else None):
            self._torch.manual_seed(seed)
            yield

    def _prefill_shared_prefixes(self, plan: PrefixPlan) -> tuple[Any, Any, Any]:
        """Compute each group's prefix once, copy its KV rows to the group's members, and lay out the full batch.

        Row ``r`` becomes ``[pad.. prefix(g) | pad.. suffix(r)]``: both regions are left-padded to their widest
        member, so the padding sits before the prefix and between prefix and suffix. The attention mask has holes
        there and generate() derives position ids from the mask's running sum, so every real token keeps the
        position it has in the unpadded prompt.
        """
        torch = self._torch
        from transformers.cache_utils import DynamicCache

        device = self.model.device
        prefix_ids, prefix_mask = self._left_pad(plan.prefixes, plan.prefix_width)
        suffix_ids, suffix_mask = self._left_pad(plan.suffixes, plan.suffix_width)
        prefix_ids, prefix_mask = prefix_ids.to(device), prefix_mask.to(device)
        cache = DynamicCache(config=self.model.config)
        forward_kwargs: dict[str, Any] = {}
        if self._logits_to_keep:
            forward_kwargs["logits_to_keep"] = 1  # only the KV is wanted; skip the vocabulary projection
        self.model(
            input_ids=prefix_ids,
            attention_mask=prefix_mask,
            position_ids=(prefix_mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
            **{self._cache_kwarg: cache},
            **forward_kwargs,
        )
        rows = torch.tensor(plan.group_of_row, device=device)
        cache.batch_select_indices(rows)
        input_ids = torch.cat([prefix_ids[rows], suffix_ids.to(device)], dim=1)
        attention_mask = torch.cat([prefix_mask[rows], suffix_mask.to(device)], dim=1)
        return input_ids, attention_mask, cache

    def _left_pad(self, sequences: Sequence[Sequence[int]], width: int) -> tuple[Any, Any]:
        torch = self._torch
        ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            if sequence:
                ids[row, width - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
                mask[row, width - len(sequence) :] = 1
        return ids, mask

    def _causal_lm(self) -> Any:
        """The transformers model whose forward produces the logits (under a peft wrapper, the wrapped one)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _logprob_row(self, recorder: _StepLogprobRecorder, row: int, tokens: list[int]) -> tuple[TokenLogprob, ...]:
        decode = self.tokenizer.decode
        entries = []
        for step, token in enumerate(tokens):
            alternatives = tuple((decode([tid]), value) for tid, value in recorder.top(row, step))
            entries.append(TokenLogprob(token=decode([token]), logprob=recorder.chosen(row, step), top=alternatives))
        return tuple(entries)


class _StepLogprobRecorder:
    """Log-probabilities read while generate() runs, keeping only what a Completion reports.

    A forward hook on the causal LM sees each decoding step's raw logits (before temperature, top-p or any logits
    processor, like ``output_logits``), turns the last position into log-probabilities and keeps the top ``top``
    alternatives. The token chosen at step t is the input of step t+1, so its log-probability is read one step late
    from the previous row, and the last step's from the final sequences. Memory grows with steps x ``top`` instead of
    steps x vocabulary: ``output_logits`` would hold 8 rows x 2048 steps x 152k vocabulary = 10 GB in fp32 for a
    Qwen3-sized judge, and a log-softmax over the stack as much again.
    """

    def __init__(self, torch: Any, top: int) -> None:
        self._top = top
        self._previous: Any = None  # [batch, vocab] log-probabilities of the latest step
        self._chosen: list[Any] = []  # per step: [batch]
        self._top_values: list[Any] = []  # per step: [batch, top]
        self._top_ids: list[Any] = []
        self._rows: tuple[list[list[float]], list[list[list[float]]], list[list[list[int]]]] | None = None
        self._torch = torch

    def hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        input_ids: Any = kwargs.get("input_ids", args[0] if args else None)
        if self._previous is not None:
            if input_ids is None:
                raise RuntimeError("the model was called without input_ids; cannot tell which token was chosen")
            self._take_chosen(input_ids[:, -1])
        self._previous = output.logits[:, -1, :].float().log_softmax(dim=-1)
        if self._top:
            values, ids = self._previous.topk(self._top, dim=-1)
            self._top_values.append(values)
            self._top_ids.append(ids)

    def finish(self, last_tokens: Any, steps: int) -> None:
        if self._previous is not None:
            self._take_chosen(last_tokens)
            self._previous = None
        if len(self._chosen) != steps:
            raise RuntimeError(f"log-probabilities were read for {len(self._chosen)} steps, but {steps} were generated")
        torch = self._torch
        if not steps:
            self._rows = ([], [], [])
            return
        chosen = torch.stack(self._chosen, dim=1).tolist()  # [batch, steps]
        values = torch.stack(self._top_values, dim=1).tolist() if self._top else []  # [batch, steps, top]
        ids = torch.stack(self._top_ids, dim=1).tolist() if self._top else []
        self._rows = (chosen, values, ids)

    def chosen(self, row: int, step: int) -> float:
        assert self._rows is not None, "finish() first"
        return float(self._rows[0][row][step])

    def top(self, row: int, step: int) -> list[tuple[int, float]]:
        assert self._rows is not None, "finish() first"
        if not self._top:
            return []
        return list(zip(self._rows[2][row][step], self._rows[1][row][step], strict=True))

    def _take_chosen(self, tokens: Any) -> None:
        index = tokens.to(self._previous.device).unsqueeze(-1)
        self._chosen.append(self._previous.gather(-1, index).squeeze(-1))
