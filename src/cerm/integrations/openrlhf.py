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

How cerm reads a sample (:func:`separate_response`): the response is ``query`` minus its ``prompts`` prefix (when the
prompt is not a prefix but occurs in the query, e.g. after a BOS token, the text after its first occurrence), with
trailing end-of-turn markers removed (:data:`DEFAULT_END_MARKERS`: ChatML, Llama 3, Gemma, Mistral, Phi-3; add more
with ``end_markers``). The judge's query is the last user turn of a ChatML, Llama 3, Gemma, Phi-3 or Mistral prompt,
else the prompt text as it is; ``query_fn`` (a function of the prompt) or ``query_field`` (a request field such as
``labels``) change that, and ``response_fn`` post-processes the response. Labels are otherwise ignored: CE-RM judges
without a reference answer.

A prompt the policy truncated: OpenRLHF cuts long prompts from the LEFT to fit its window but sends the full prompt
text. A sample that starts with the prompt's end is recognised, its response separated after it, and the judge reads
the prompt as sent (its last user turn, in full); the sample is flagged ``prompt_truncated`` in ``"cerm"`` and
``extra_logs["cerm_prompt_truncated"]``. A sample holding neither the prompt nor its end is UNSCORABLE.

UNSCORABLE samples: OpenRLHF needs a number for every sample, so the server answers ``unscorable_reward`` for them, a
value the operator MUST choose (no default), and says so per sample: ``extra_logs["cerm_scorable"]`` is 1.0 or 0.0 and
the extra top-level field ``"cerm"`` lists ``{"status", "score", "reason", "prompt_truncated"}`` per sample (OpenRLHF
ignores it).

ERROR samples (no judgment: the judge's generation failed, e.g. its server is down or out of memory) are never
given a reward: the request answers HTTP 503 with ``{"error": "...", "cerm": [...]}`` naming the failed samples, so
OpenRLHF's client retries it (5 attempts) and, when the failure persists, OpenRLHF 0.11.2's rollout logs the error and
keeps that sample without a reward, rather than training on an invented number. Only the requests that hold an errored
sample fail; the others merged with them in a micro-batch are answered.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cerm._errors import BackendUnavailableError
from cerm._judge import validate_item
from cerm._reward_judge import RewardJudge, require_reward_judge
from cerm._ties import TieBreak
from cerm._types import Judgment
from cerm.integrations._batching import MicroBatcher, Pair
from cerm.integrations._common import (
    Outcome,
    Scale,
    judge_scale,
    outcome_reason,
    outcome_score,
    outcome_status,
    scaled,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("cerm")

__all__ = [
    "DEFAULT_END_MARKERS",
    "RewardServer",
    "Separated",
    "create_app",
    "openrlhf_query",
    "separate_response",
    "split_sample",
    "strip_end_markers",
]

#: End-of-turn / padding markers stripped from the end of a response (tokenizers decode them as text), for the common
#: chat templates: ChatML (Qwen, SmolLM) ``<|im_end|>`` ``<|endoftext|>``; Llama 3 ``<|eot_id|>`` ``<|eom_id|>``
#: ``<|end_of_text|>``; Gemma ``<end_of_turn>`` ``<eos>``; Mistral / Llama 2 ``</s>``; Phi-3 ``<|end|>``.
DEFAULT_END_MARKERS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<eos>",
    "</s>",
    "<|end|>",
)
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ITEMS_PER_REQUEST = 4096
#: Criteria sets kept by the server's own cache (one per prompt and criteria sample; least recently used evicted).
DEFAULT_CRITERIA_CACHE_SIZE = 65536
#: A truncated prompt is recognised by its last characters reappearing at the start of the sample (see
#: :func:`separate_response`); shorter tails than this are too likely to match by chance.
_MIN_TAIL_CHARS = 16

#: The last user turn of the common chat templates, tried in this order (the first template that matches wins).
_USER_TURNS = (
    re.compile(r"<\|im_start\|>user\s*\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL),  # ChatML
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)(?:<\|eot_id\|>|$)", re.DOTALL),  # Llama 3
    re.compile(r"<start_of_turn>user\s*\n(.*?)(?:<end_of_turn>|$)", re.DOTALL),  # Gemma
    re.compile(r"<\|user\|>\s*\n?(.*?)(?:<\|end\|>|$)", re.DOTALL),  # Phi-3
    re.compile(r"\[INST\](.*?)\[/INST\]", re.DOTALL),  # Mistral / Llama 2
)


def openrlhf_query(prompt: str) -> str:
    """The judge's query for a templated prompt: the last user turn of a ChatML, Llama 3, Gemma, Phi-3 or Mistral
    prompt (system prompt and earlier turns are not shown to the judge), else the prompt itself."""
    for pattern in _USER_TURNS:
        turns = pattern.findall(prompt)
        if turns:
            return str(turns[-1]).strip()
    return prompt.strip()


@dataclass(frozen=True)
class Separated:
    """A sample's response as :func:`separate_response` found it: ``response`` (None when it could not be separated,
    then ``reason`` says why) and ``prompt_truncated``: the sample text held only the END of the prompt, because the
    policy side cut the prompt from the left to fit its context window (OpenRLHF does, and still sends the full prompt
    text in ``prompts``)."""

    response: str | None
    reason: str | None = None
    prompt_truncated: bool = False


def strip_end_markers(response: str, end_markers: Sequence[str] = DEFAULT_END_MARKERS) -> str:
    """``response`` without the end-of-turn markers (and the whitespace around them) at its end, repeatedly."""
    changed = True
    while changed:
        changed = False
        stripped = response.rstrip()
        for marker in end_markers:
            if marker and stripped.endswith(marker):
                response, changed = stripped[: -len(marker)], True
                break
    return response.strip()


def _after_truncated_prompt(query: str, prompt: str) -> int | None:
    """Where the response starts when ``query`` begins with the tail of ``prompt`` (a left-truncated prompt), else
    None. The longest such tail wins; a decoding cut inside a multi-byte character (U+FFFD) is skipped."""
    start = len(query) - len(query.lstrip("\ufffd"))
    anchor = prompt[-_MIN_TAIL_CHARS:]
    if len(prompt) < _MIN_TAIL_CHARS:
        return None
    best = None
    at = query.find(anchor, start)
    while at != -1:
        end = at + len(anchor)
        head = query[start:end]
        if len(head) < len(prompt) and prompt.endswith(head):
            best = end
        at = query.find(anchor, at + 1)
    return best


def separate_response(query: str, prompt: str, end_markers: Sequence[str] = DEFAULT_END_MARKERS) -> Separated:
    """The response inside OpenRLHF's full sample text ``query`` given its ``prompt``.

    In order: ``query`` starts with ``prompt``; ``prompt`` occurs in ``query`` (e.g. after a BOS token): the text after
    its first occurrence; ``query`` starts with the last characters of ``prompt`` (the policy cut the prompt from the
    left): the text after that tail, flagged ``prompt_truncated``. Otherwise the response cannot be told apart.
    Trailing ``end_markers`` are removed.
    """
    truncated = False
    if query.startswith(prompt):
        response = query[len(prompt) :]
    elif prompt and prompt in query:
        response = query[query.index(prompt) + len(prompt) :]
    else:
        cut = _after_truncated_prompt(query, prompt)
        if cut is None:
            return Separated(
                None, "the query text does not contain its prompt, so the response cannot be separated from it"
            )
        response, truncated = query[cut:], True
    return Separated(strip_end_markers(response, end_markers), None, truncated)


def split_sample(
    query: str, prompt: str, end_markers: Sequence[str] = DEFAULT_END_MARKERS
) -> tuple[str | None, str | None]:
    """``(response, None)`` from OpenRLHF's full text and its prompt, or ``(None, reason)`` when the prompt is not in
    the text (see :func:`separate_response`, which also says whether the prompt was truncated)."""
    separated = separate_response(query, prompt, end_markers)
    return separated.response, separated.reason


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
    judge: RewardJudge,
    *,
    unscorable_reward: float,
    scale: Scale | tuple[float, float] | None = None,
    max_batch_items: int = 256,
    max_wait_ms: float = 10.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_items_per_request: int = DEFAULT_MAX_ITEMS_PER_REQUEST,
    query_fn: Callable[[str], str] = openrlhf_query,
    end_markers: Sequence[str] = DEFAULT_END_MARKERS,
    query_field: str | None = None,
    response_fn: Callable[[str], str] | None = None,
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
        query_fn: prompt text -> the judge's query (default :func:`openrlhf_query`: the last user turn of the common
            chat templates, else the prompt).
        end_markers: markers stripped from the end of a response (default :data:`DEFAULT_END_MARKERS`, the common
            templates' end-of-turn markers; pass ``(*DEFAULT_END_MARKERS, "<|my_end|>")`` to add one).
        query_field: take the judge's query from this request field instead of the prompt: a list with one string
            per sample, e.g. ``"labels"`` when OpenRLHF's ``--label_key`` names a dataset column holding the plain
            question. A request without it is a 422. ``query_fn`` is then unused.
        response_fn: response text (after the prompt, end markers removed) -> the text the judge sees, e.g. to cut a
            reasoning block; an exception it raises makes that sample UNSCORABLE with the reason.
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
    if query_field is not None and (not query_field or query_field in ("query", "prompts")):
        raise ValueError(f"query_field must name a request field other than 'query' and 'prompts', got {query_field!r}")
    end_markers = tuple(end_markers)
    require_reward_judge(judge)
    reward_scale = judge_scale(judge, scale)
    # The caller's judge stays as it is: the server judges through one like it that caches its per-query work.
    judge = judge.with_query_cache(criteria_cache_size)
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

    def parse(body: dict[str, Any]) -> tuple[list[Pair], list[bool]]:
        """The judge's (query, response) pairs of a request, and per sample whether its prompt arrived truncated."""
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
        judge_queries: list[str] | None = None
        if query_field is not None:
            judge_queries = _string_list(body, query_field, required=True)
            assert judge_queries is not None
            if len(judge_queries) != len(queries):
                raise _BadRequest(422, f"'{query_field}' has {len(judge_queries)} items but 'query' has {len(queries)}")
        if len(queries) > max_items_per_request:
            raise _BadRequest(413, f"{len(queries)} samples in one request exceed the limit of {max_items_per_request}")
        pairs: list[Pair] = []
        truncated: list[bool] = []
        for i, (text, prompt) in enumerate(zip(queries, prompts, strict=True)):
            separated = separate_response(text, prompt, end_markers)
            truncated.append(separated.prompt_truncated)
            response = separated.response
            if response is None:
                pairs.append((None, "", separated.reason))
                continue
            if response_fn is not None:
                try:
                    response = response_fn(response)
                except Exception as exc:  # the user's function; its failure is this sample's, reported as its reason
                    pairs.append((None, "", f"response_fn failed: {type(exc).__name__}: {exc}"))
                    continue
                if not isinstance(response, str):
                    pairs.append((None, "", f"response_fn returned {type(response).__name__}, not a string"))
                    continue
            judge_query: str | None
            if judge_queries is not None:
                judge_query = judge_queries[i]
            else:
                try:
                    # The prompt as sent, even when the policy saw only its end: the judge judges the whole question.
                    judge_query = query_fn(prompt)
                except Exception as exc:  # the user's function (or the default); this sample alone is unscorable
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
        if any(truncated):
            logger.info(
                "%d of %d samples came with a prompt the policy truncated from the left; the judge reads the full "
                "prompt as sent (flagged prompt_truncated)",
                sum(truncated),
                len(truncated),
            )
        return pairs, truncated

    def authorized(request: Any) -> bool:
        if expected_auth is None:
            return True
        given = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, expected_auth)

    def answer(outcomes: list[Outcome], truncated: list[bool]) -> Any:
        details = [
            {
                "status": outcome_status(o),
                "score": outcome_score(o),
                "reason": outcome_reason(o),
                "prompt_truncated": cut,
            }
            for o, cut in zip(outcomes, truncated, strict=True)
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
        extra_logs = {"cerm_scorable": scorable, "cerm_prompt_truncated": [float(cut) for cut in truncated]}
        return {"rewards": rewards, "scores": list(rewards), "extra_logs": extra_logs, "cerm": details}

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
            pairs, truncated = parse(await read_body(request))
        except _BadRequest as bad:
            logger.info("rejected a reward request (%d): %s", bad.status, bad.message)
            return error(bad.status, bad.message)
        if not pairs:
            return {
                "rewards": [],
                "scores": [],
                "extra_logs": {"cerm_scorable": [], "cerm_prompt_truncated": []},
                "cerm": [],
            }
        try:
            outcomes = await batcher.submit(pairs)
        except Exception as exc:  # the judge call failed for this batch (logged by the batcher); answer, keep serving
            return error(500, f"judging failed: {type(exc).__name__}: {exc}")
        return answer(outcomes, truncated)

    async def health(request: Any) -> Any:
        if not authorized(request):
            return unauthorized()
        stats = batcher.stats
        cache = judge.cache
        return {
            "status": "ok",
            "kind": judge.kind,
            "model": judge.model_id,
            "backend": judge.backend_name,
            "batches": stats.batches,
            "items": stats.items,
            "requests": stats.requests,
            "largest_batch": stats.largest_batch,
            "errored_items": stats.errored_items,
            "criteria_cache": None
            if cache is None
            else {"entries": len(cache), "hits": cache.hits, "misses": cache.misses},
            # An endpoint pool's live per-server counters (None for a backend without a pool, or a judge kind
            # without a generation backend).
            "endpoints": _live_endpoints(judge),
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


def _live_endpoints(judge: RewardJudge) -> Any:
    """The per-server counters of the judge's endpoint pool, read now (a Judge's ``describe()`` is fixed at start)."""
    backend = getattr(judge, "backend", None)
    return None if backend is None else backend.describe().get("endpoints")
