"""OpenRLHF: an HTTP reward server speaking OpenRLHF's remote reward contract.

Point OpenRLHF at it with ``--reward.remote_url http://host:port/get_reward`` (OpenRLHF 0.11; older releases call
the flag ``--remote_rm_url``).

The contract, as OpenRLHF's trainer uses it:

* request: ``POST /get_reward`` with JSON ``{"query": [str], "prompts": [str], "labels": [...]}``. ``query[i]`` is the
  FULL text of sample i, prompt and response together, decoded with special tokens (chat template included);
  ``prompts[i]`` is its prompt text; ``labels[i]`` the dataset label (``--label_key``). Recent OpenRLHF versions send
  one sample per request, many requests at once.
* answer: ``{"rewards": [float], "scores": [float], "extra_logs": {name: [float]}}``, one value per sample.
  ``rewards`` drive the advantages, ``scores`` the dynamic filtering, ``extra_logs`` are logged.

How cerm reads a sample: the response is ``query`` minus its ``prompts`` prefix (when the prompt is not a prefix but
occurs in the query, e.g. after a BOS token, the text after its first occurrence; otherwise the sample is UNSCORABLE),
with trailing end-of-turn markers (``<|im_end|>``, ``<|eot_id|>``, ``</s>``, ...) removed. The judge's query is the
last user turn of a ChatML (``<|im_start|>user``) or Llama-3 (``<|start_header_id|>user``) templated prompt, else the
prompt text as it is; pass ``query_fn`` for other templates. Labels are accepted and ignored: CE-RM judges without a
reference answer.

UNSCORABLE samples: OpenRLHF needs a number for every sample, so the server answers ``unscorable_reward`` for them, a
value the operator MUST choose (no default), and says so per sample: ``extra_logs["cerm_scorable"]`` is 1.0 or 0.0 and
the extra top-level field ``"cerm"`` lists ``{"status", "score", "reason"}`` per sample (OpenRLHF ignores it).

ERROR samples (no judgment: the judge's generation failed, e.g. its server is down or out of memory) are never
given a reward: the request answers HTTP 503 with ``{"error": "...", "cerm": [...]}`` naming the failed samples, so
OpenRLHF's client retries it and, when the failure persists, stops the run loudly instead of training on an invented
number. Only the requests that hold an errored sample fail; the others merged with them in a micro-batch are answered.

Concurrent requests are merged by a :class:`~cerm.integrations._batching.MicroBatcher` into large judge calls. Every
request is checked on its own before it joins a batch (:func:`cerm.validate_item`): malformed bodies and invalid text
(a lone surrogate, a JSON body nested too deep) get a 4xx answer with ``{"error": "..."}`` naming the problem, and
never reach the other requests. An exception from the judge itself fails only the requests it belongs to (the batch
is split and retried per request) with a 500; the server keeps serving.

Criteria are shared per prompt across requests: the server keeps a bounded in-memory criteria cache (unless the judge
has its own), so the samples of one prompt get one criteria set even when they arrive apart in time, in different
micro-batches.

The server binds 127.0.0.1 by default. When it must be reachable beyond the host, set ``api_key`` (``--api-key`` or
``CERM_SERVE_API_KEY``): every request then needs ``Authorization: Bearer <key>``, compared in constant time.

Needs the ``serve`` extra: ``pip install 'ce-rm[serve]'`` (FastAPI + uvicorn).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from cerm._cache import MemoryCriteriaCache
from cerm._errors import BackendUnavailableError
from cerm._judge import Judge, validate_item
from cerm._ties import TieBreak
from cerm._types import Judgment
from cerm.integrations._batching import MicroBatcher, Pair
from cerm.integrations._common import (
    Outcome,
    Scale,
    as_scale,
    outcome_reason,
    outcome_score,
    outcome_status,
    scaled,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("cerm")

__all__ = ["DEFAULT_END_MARKERS", "RewardServer", "create_app", "openrlhf_query", "split_sample"]

#: End-of-turn / padding markers stripped from the end of a response (tokenizers decode them as text).
DEFAULT_END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "</s>", "<eos>")
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ITEMS_PER_REQUEST = 4096
#: Criteria sets kept by the server's own cache (one per prompt and criteria sample; least recently used evicted).
DEFAULT_CRITERIA_CACHE_SIZE = 65536

_CHATML_USER = re.compile(r"<\|im_start\|>user\s*\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL)
_LLAMA3_USER = re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)(?:<\|eot_id\|>|$)", re.DOTALL)


def openrlhf_query(prompt: str) -> str:
    """The judge's query for a templated prompt: the last ChatML or Llama-3 user turn, else the prompt itself."""
    for pattern in (_CHATML_USER, _LLAMA3_USER):
        turns = pattern.findall(prompt)
        if turns:
            return str(turns[-1]).strip()
    return prompt.strip()


def split_sample(
    query: str, prompt: str, end_markers: Sequence[str] = DEFAULT_END_MARKERS
) -> tuple[str | None, str | None]:
    """``(response, None)`` from OpenRLHF's full text and its prompt, or ``(None, reason)`` when the prompt is not in
    the text. Trailing end markers (and the whitespace around them) are removed from the response."""
    if query.startswith(prompt):
        response = query[len(prompt) :]
    elif prompt and prompt in query:
        response = query[query.index(prompt) + len(prompt) :]
    else:
        return None, "the query text does not contain its prompt, so the response cannot be separated from it"
    changed = True
    while changed:
        changed = False
        stripped = response.rstrip()
        for marker in end_markers:
            if marker and stripped.endswith(marker):
                response, changed = stripped[: -len(marker)], True
                break
    return response.strip(), None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _string_list(body: dict[str, Any], key: str, required: bool) -> list[str] | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _BadRequest(422, f"'{key}' is required: a list of strings")
        return None
    if not isinstance(value, list):
        raise _BadRequest(422, f"'{key}' must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _BadRequest(422, f"'{key}'[{i}] must be a string, got {type(item).__name__}")
    return value


def _import_fastapi() -> Any:
    try:
        import fastapi
    except ImportError as exc:
        message = "the reward server needs FastAPI and uvicorn: pip install 'ce-rm[serve]'"
        raise BackendUnavailableError(message) from exc
    return fastapi


def create_app(
    judge: Judge,
    *,
    unscorable_reward: float,
    scale: Scale | tuple[float, float] | None = None,
    max_batch_items: int = 256,
    max_wait_ms: float = 10.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_items_per_request: int = DEFAULT_MAX_ITEMS_PER_REQUEST,
    query_fn: Callable[[str], str] = openrlhf_query,
    end_markers: Sequence[str] = DEFAULT_END_MARKERS,
    criteria_cache_size: int = DEFAULT_CRITERIA_CACHE_SIZE,
    api_key: str | None = None,
    tie_break: TieBreak | None = None,
) -> FastAPI:
    """The FastAPI application of the reward server (routes ``POST /get_reward`` and ``GET /health``).

    Args:
        judge: the judge; the app does not close it.
        unscorable_reward: the reward (and score) answered for an UNSCORABLE sample, in the reward's units (after
            ``scale``). Required: OpenRLHF needs a number, and which number is a training decision.
        scale: ``(low, high)`` maps the 0-10 score onto that range; None keeps 0-10. ``(0, 1)`` suits OpenRLHF's
            dynamic filtering, which reads ``scores`` as 0-1.
        max_batch_items, max_wait_ms: micro-batching: judge up to that many pending samples together, waiting at most
            that long after the first one for others to arrive.
        max_body_bytes: larger request bodies are refused with 413 before they are read whole.
        max_items_per_request: more samples in one request is a 413.
        query_fn: prompt text -> the judge's query (default :func:`openrlhf_query`).
        end_markers: markers stripped from the end of a response.
        criteria_cache_size: when the judge has no criteria cache, the server judges through one of its own, a
            :class:`~cerm.MemoryCriteriaCache` of this many entries, so the samples of one prompt share one criteria
            set however they arrive; 0 turns it off. The judge's own cache (``Judge(..., cache=...)``) is used as is.
            Keyed by the query and the judge's settings; sampled criteria (k > 1 or temperature > 0) are then frozen
            per prompt for the server's lifetime, which is what a GRPO group needs.
        api_key: when set, every request must carry ``Authorization: Bearer <api_key>`` (401 otherwise).
        tie_break: a :class:`~cerm.TieBreak` (off by default): tied samples of one prompt within a micro-batch get
            more chains, so a group with identical rewards gets a chance to separate (cost: see
            :class:`~cerm.integrations.CermRewardFunc`; only samples judged in the same batch are compared).
    """
    fastapi = _import_fastapi()
    from fastapi.responses import JSONResponse

    if not math.isfinite(unscorable_reward):
        raise ValueError("unscorable_reward must be a finite number")
    if max_body_bytes < 1 or max_items_per_request < 1:
        raise ValueError("max_body_bytes and max_items_per_request must be >= 1")
    if criteria_cache_size < 0:
        raise ValueError(f"criteria_cache_size must be >= 0, got {criteria_cache_size}")
    if api_key is not None and not api_key:
        raise ValueError("api_key must not be empty (None turns authentication off)")
    reward_scale = as_scale(scale)
    if judge.cache is None and criteria_cache_size:
        # The caller's judge stays as it is: the server judges through a Judge on the same backend and config.
        judge = Judge(judge.backend, config=judge.config, cache=MemoryCriteriaCache(criteria_cache_size))
    batcher = MicroBatcher(judge, max_batch_items=max_batch_items, max_wait_s=max_wait_ms / 1000.0, tie_break=tie_break)
    expected_auth = None if api_key is None else f"Bearer {api_key}".encode()

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.aclose()

    app = fastapi.FastAPI(title="cerm reward server (OpenRLHF remote reward contract)", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.judge = judge

    def error(status: int, message: str) -> Any:
        return JSONResponse({"error": message}, status_code=status)

    async def read_body(request: Any) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise _BadRequest(400, "invalid Content-Length header")
            if int(declared) > max_body_bytes:
                raise _BadRequest(413, f"request body of {declared} bytes exceeds the limit of {max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():  # counted as it arrives: a missing/false Content-Length cannot bypass it
            size += len(chunk)
            if size > max_body_bytes:
                raise _BadRequest(413, f"request body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw:
            raise _BadRequest(400, 'empty request body: send JSON {"query": [...], "prompts": [...]}')
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _BadRequest(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise _BadRequest(400, "request body is nested too deeply to be a reward request") from None
        if not isinstance(body, dict):
            raise _BadRequest(422, f"request body must be a JSON object, got {type(body).__name__}")
        return body

    def parse(body: dict[str, Any]) -> list[Pair]:
        queries = _string_list(body, "query", required=True)
        prompts = _string_list(body, "prompts", required=False)
        assert queries is not None
        if prompts is None:
            raise _BadRequest(
                422, "'prompts' is required: the judge needs each sample's prompt to separate and judge its response"
            )
        if len(prompts) != len(queries):
            raise _BadRequest(422, f"'query' has {len(queries)} items but 'prompts' has {len(prompts)}")
        labels = body.get("labels")
        if labels is not None and (not isinstance(labels, list) or len(labels) != len(queries)):
            raise _BadRequest(422, "'labels', when given, must be a list with one entry per query")
        if len(queries) > max_items_per_request:
            raise _BadRequest(413, f"{len(queries)} samples in one request exceed the limit of {max_items_per_request}")
        pairs: list[Pair] = []
        for i, (text, prompt) in enumerate(zip(queries, prompts, strict=True)):
            response, reason = split_sample(text, prompt, end_markers)
            if response is None:
                pairs.append((None, "", reason))
                continue
            try:
                judge_query: str | None = query_fn(prompt)
            except (TypeError, ValueError) as exc:
                pairs.append((None, "", f"could not derive the judge's query from the prompt: {exc}"))
                continue
            if not isinstance(judge_query, str) or not judge_query.strip():
                pairs.append((None, "", "the judge's query (derived from the prompt) is empty"))
                continue
            try:
                # The judge's own input check, per request: an item it would refuse must fail this request alone,
                # never the micro-batch it would have joined.
                validate_item(judge_query, [response])
            except (TypeError, ValueError) as exc:
                raise _BadRequest(400, f"sample {i}: {exc}") from None
            pairs.append((judge_query, response, None))
        return pairs

    def authorized(request: Any) -> bool:
        if expected_auth is None:
            return True
        given = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, expected_auth)

    def answer(outcomes: list[Outcome]) -> Any:
        details = [
            {"status": outcome_status(o), "score": outcome_score(o), "reason": outcome_reason(o)} for o in outcomes
        ]
        errored = [i for i, o in enumerate(outcomes) if isinstance(o, Judgment) and o.errored]
        if errored:
            # No judgment, so no reward: a 5xx makes OpenRLHF's client retry, and stop the run if it persists.
            first = outcomes[errored[0]].reason
            message = (
                f"judging failed for {len(errored)} of {len(outcomes)} samples (no judgment; retry the request): "
                f"sample {errored[0]}: {first}"
            )
            logger.warning("answering 503: %s", message)
            return JSONResponse({"error": message, "cerm": details}, status_code=503)
        rewards, scorable = [], []
        for outcome in outcomes:
            score = outcome_score(outcome)
            value = scaled(score, reward_scale)
            rewards.append(unscorable_reward if value is None else value)
            scorable.append(0.0 if score is None else 1.0)
        return {"rewards": rewards, "scores": list(rewards), "extra_logs": {"cerm_scorable": scorable}, "cerm": details}

    def unauthorized() -> Any:
        return JSONResponse(
            {"error": "missing or wrong API key: send 'Authorization: Bearer <key>'"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def get_reward(request: Any) -> Any:
        if not authorized(request):
            return unauthorized()
        try:
            pairs = parse(await read_body(request))
        except _BadRequest as bad:
            logger.info("rejected a reward request (%d): %s", bad.status, bad.message)
            return error(bad.status, bad.message)
        if not pairs:
            return {"rewards": [], "scores": [], "extra_logs": {"cerm_scorable": []}, "cerm": []}
        try:
            outcomes = await batcher.submit(pairs)
        except Exception as exc:  # the judge call failed for this batch (logged by the batcher); answer, keep serving
            return error(500, f"judging failed: {type(exc).__name__}: {exc}")
        return answer(outcomes)

    async def health(request: Any) -> Any:
        if not authorized(request):
            return unauthorized()
        stats = batcher.stats
        cache = judge.cache
        return {
            "status": "ok",
            "model": judge.backend.model_id,
            "backend": judge.backend.name,
            "batches": stats.batches,
            "items": stats.items,
            "requests": stats.requests,
            "largest_batch": stats.largest_batch,
            "errored_items": stats.errored_items,
            "criteria_cache": None
            if cache is None
            else {"entries": len(cache), "hits": cache.hits, "misses": cache.misses},
        }

    # FastAPI reads parameter annotations to decide what to inject; this module postpones annotations (they are
    # strings), and fastapi is imported lazily, so the Request annotation is set to the real class here.
    get_reward.__annotations__["request"] = fastapi.Request
    health.__annotations__["request"] = fastapi.Request
    app.add_api_route("/get_reward", get_reward, methods=["POST"])
    app.add_api_route("/health", health, methods=["GET"])
    return app  # type: ignore[no-any-return]


class RewardServer:
    """Run a reward server app with uvicorn in a background thread, on a real socket (tests, notebooks, examples).

    >>> with RewardServer(create_app(judge, unscorable_reward=0.0)) as server:   # doctest: +SKIP
    ...     httpx.post(server.url + "/get_reward", json={...})

    ``port=0`` (default) binds a free port; ``url`` tells which. ``cerm serve`` runs the same app in the foreground.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        try:
            import uvicorn
        except ImportError as exc:
            raise BackendUnavailableError("the reward server needs uvicorn: pip install 'ce-rm[serve]'") from exc
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host = host
        self.port = int(self._socket.getsockname()[1])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> RewardServer:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="cerm-reward-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the reward server stopped during startup (see the log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the reward server did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> RewardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
