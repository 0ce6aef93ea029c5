"""OpenAI-compatible chat servers (vLLM, SGLang, llama.cpp, hosted endpoints) through the official ``openai`` client.

Install with ``pip install 'ce-rm[openai]'``.

Design, and why:

* Every request runs on one private event loop in a background thread (the backend's "I/O loop"). ``generate`` (sync)
  hands its batch to that loop and waits, so it works inside a notebook whose loop is already running (no
  ``asyncio.run`` anywhere); ``agenerate`` awaits the same work without blocking the caller's loop. One loop means one
  connection pool, and one concurrency limit and one rate limit shared by every caller, from any thread or loop;
  nothing is bound to a caller's loop, so ``asyncio.run`` called twice by a user finds no stale connections.
* Every conversation is its own HTTP request (servers batch internally), at most ``max_concurrency`` in flight.
* Retries come from tenacity: exponential backoff with jitter on 429, 5xx, timeouts, dropped connections and malformed
  bodies, ``Retry-After`` honoured, at most ``max_attempts`` attempts of at most ``timeout`` seconds each. Other 4xx
  answers (400, 401, 403, 404, 422, ...) are not retried. A request that still fails becomes that item's
  ``Completion(finish_reason="error")`` with the message; the other items are unaffected and keep their order.
* Servers differ: when one ignores ``n > 1`` (llama.cpp returns one choice) the missing samples are requested one by
  one, and later calls go one by one straight away. When one returns no log-probabilities, ``logprobs`` is None.
* The official client parses the HTTP exchange (auth, base URL, status errors); the JSON body is read directly rather
  than through the client's typed models, which keeps the client's CPU cost per request low at high concurrency.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from cerm._errors import BackendUnavailableError, ConfigurationError
from cerm.backends._base import Backend, Completion, FinishReason, SamplingParams, TokenLogprob
from cerm.backends._pool import Endpoint, EndpointPool, EndpointStats, affinity_key
from cerm.protocol import PROTOCOL_TEMPLATE_KWARGS, Conversation

logger = logging.getLogger("cerm")

T = TypeVar("T")

#: Sent when neither ``api_key`` nor ``$OPENAI_API_KEY`` is set: local servers accept any key, the client needs one.
_PLACEHOLDER_KEY = "EMPTY"
# Retried: rate limits, server errors, and the few 4xx codes that mean "try again" (timeout, conflict, too early).
_RETRIED_4XX = frozenset({408, 409, 425, 429})
# Hosts known to reject request fields they do not define: chat_template_kwargs is not sent there unless asked for.
_STRICT_HOSTS = frozenset({"api.openai.com"})
# Query parameters whose values are secrets (Azure's api-key, signed URLs): scrubbed from error text.
_SECRET_QUERY_WORDS = ("key", "token", "secret", "sig", "auth", "pass", "code")
Transport = Literal["aiohttp", "httpx"]


class _Retryable(Exception):
    """A transient failure worth another attempt; ``retry_after`` is the server's requested wait, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        #: Set by the pool: another endpoint can take the next attempt now, so no back-off is needed.
        self.elsewhere = False


class _Fatal(Exception):
    """A failure another attempt would not fix (bad request, bad key, unknown model or route)."""


def _import_deps() -> tuple[Any, Any]:
    try:
        import openai
        import tenacity
    except ImportError as exc:
        raise BackendUnavailableError(
            "the openai backend needs openai and tenacity: pip install 'ce-rm[openai]'"
        ) from exc
    return openai, tenacity


def _public_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to log and to record in provenance."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _basic_auth(username: str | None, password: str | None) -> str | None:
    """The ``Authorization`` value for credentials found in a URL (percent-decoded), or None when it has none."""
    if username is None and password is None:
        return None
    pair = f"{unquote(username or '')}:{unquote(password or '')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


@dataclass(frozen=True)
class _Address:
    """One server's URL taken apart: the clean URL, its query (sent as parameters), URL credentials as a header."""

    url: str
    default_query: dict[str, str]
    auth_header: str | None
    secrets: tuple[str, ...]

    @classmethod
    def parse(cls, url: str, api_key: str | None, extra_headers: Mapping[str, str] | None) -> _Address:
        # The client appends "/chat/completions" to the base URL, so a query string in it (Azure-style
        # "?api-version=...") would end up inside the path. It is sent as a query parameter of every request instead.
        parts = urlsplit(url)
        default_query = dict(parse_qsl(parts.query, keep_blank_values=True))
        # Credentials in the URL go into a header: aiohttp refuses a URL with user info next to an Authorization
        # header, and a URL is what ends up in logs.
        url_auth = _basic_auth(parts.username, parts.password)
        if url_auth is not None and api_key is not None:
            raise ConfigurationError(
                "base_url carries credentials (user:password@host) and api_key is given too: pass only one of them"
            )
        if url_auth is not None and any(name.lower() == "authorization" for name in extra_headers or {}):
            raise ConfigurationError(
                "base_url carries credentials (user:password@host) and extra_headers sets Authorization: pass one"
            )
        query_secrets = [v for k, v in default_query.items() if any(w in k.lower() for w in _SECRET_QUERY_WORDS)]
        url_secrets = [unquote(parts.password or ""), (url_auth or "").removeprefix("Basic ")]
        clean = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        return cls(clean, default_query, url_auth, tuple(x for x in (*url_secrets, *query_secrets) if x))


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, ``Retry-After`` in seconds or as an HTTP date."""
    if not headers:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError):
        return None


class _Throttle:
    """A token bucket for requests or tokens per minute, spread evenly: at most one second's worth in a burst.

    ``reserve`` takes ``cost`` units now (the level may go negative: that is a debt) and says how long the caller must
    wait for the debt to be repaid. It runs on the single I/O loop, so it needs no lock.
    """

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def reserve(self, cost: float) -> float:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= cost
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def refund(self, amount: float) -> None:
        """Correct an earlier estimate (positive: fewer units were used than reserved)."""
        self.level = min(self.capacity, self.level + amount)


class _IOLoop:
    """A private event loop in a daemon thread. Coroutines submitted from any thread run there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(ready,), name="cerm-openai-io", daemon=True)
        self.thread.start()
        ready.wait()

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a sync call was made from the backend's own I/O loop; use the async API there")
        future = self.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise RuntimeError("the backend was closed while this call was running") from None
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt in the caller: stop the requests too
            raise

    def stop(self, final: Coroutine[Any, Any, Any] | None, timeout: float = 10.0) -> None:
        if not self.thread.is_alive():
            if final is not None:
                final.close()
            return
        if final is not None and threading.current_thread() is not self.thread:
            try:
                self.submit(final).result(timeout)
            except Exception:  # closing must not fail the caller; the connections die with the loop anyway
                logger.debug("closing the openai client failed", exc_info=True)
        elif final is not None:
            final.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)
            if not self.thread.is_alive():
                self.loop.close()


async def _aclose(holder: dict[str, Any]) -> None:
    """On the I/O loop: cancel requests still in flight (their callers get an error, not a hang), close the client."""
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for client in holder.get("clients", ()):
        await client.close()


def _shutdown(io: _IOLoop, holder: dict[str, Any]) -> None:
    """Finalizer (also run at exit): stop the requests in flight, close the client's connections, stop the loop."""
    io.stop(_aclose(holder))


class OpenAIBackend(Backend):
    """Generation through any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    >>> backend = OpenAIBackend("my-judge", base_url="http://127.0.0.1:8000/v1")     # doctest: +SKIP
    >>> judge = Judge(backend)                                                      # doctest: +SKIP

    Args:
        model: the model name the server expects (``--served-model-name`` for vLLM; llama.cpp accepts any).
        base_url: the server's API root, e.g. ``http://127.0.0.1:8000/v1``; default ``$OPENAI_BASE_URL``, else
            OpenAI's own endpoint.
        base_urls: a pool of servers of the same model instead of one ``base_url`` (see "Endpoint pools" below).
        api_key: default ``$OPENAI_API_KEY``; local servers without a key get a placeholder. Never logged, never
            recorded in :meth:`describe` or provenance.
        timeout: seconds one attempt may take in total (connect, queue on the server, generate, read).
        connect_timeout: seconds to establish a connection.
        max_concurrency: requests in flight at once (one connection each), for the whole backend.
        max_attempts: attempts per request, first one included (1 = no retries).
        backoff_initial, backoff_max: exponential backoff with jitter between attempts, in seconds.
        max_retry_after: the longest ``Retry-After`` wait honoured; a longer one is cut to this.
        requests_per_minute, tokens_per_minute: optional client-side rate limits. Tokens are estimated before a
            request (prompt characters / 4 + the completion budget) and corrected from ``usage`` afterwards.
        chat_template_kwargs: extra chat-template variables for the server to render with, on top of the CE-RM
            protocol's ``{"enable_thinking": False}`` (what Qwen3's hybrid templates need; other templates ignore it).
        send_template_kwargs: whether to send those variables as the ``chat_template_kwargs`` request field, which
            vLLM, SGLang and llama.cpp's server read. ``None`` (default): send it, except to OpenAI's own API (which
            rejects fields it does not define), and if a server refuses the field (HTTP 400/422 naming it), resend
            without it and stop sending it. ``True``: always send (a refusal is the request's error). ``False``:
            never send (then set the server's template defaults yourself).
        extra_body: extra request fields sent with every request, e.g. ``{"top_k": 20}``. They override cerm's own
            fields of the same name (``chat_template_kwargs`` included).
        extra_headers: extra HTTP headers (not recorded in :meth:`describe`: they may hold credentials).

    Credentials in ``base_url`` (``https://user:password@host/v1``) are taken out of the URL and sent as HTTP Basic
    authorization (``Authorization: Basic ...``, as curl does with such a URL) in place of the API key's Bearer
    header; giving ``api_key`` as well is refused as ambiguous. Neither they nor query-string values are recorded.
        max_tokens_field: ``"max_tokens"`` (understood everywhere; llama.cpp ignores the other) or
            ``"max_completion_tokens"`` (OpenAI's reasoning models need it).
        context_length: the model's context, when you know it (recorded in provenance; the server checks it).
        transport: ``"aiohttp"`` (lower CPU per request; needs aiohttp) or ``"httpx"`` (the client's default).
        endpoint_max_concurrency: requests in flight at once on each server of a pool (``max_concurrency`` still
            bounds the whole backend).
        endpoint_requests_per_minute: a client-side rate limit for each server of a pool.
        eject_after, eject_backoff: a server that fails this many retryable attempts in a row (connection refused,
            5xx, 429, timeouts) is out of service for ``eject_backoff`` seconds, doubling on each new ejection (at
            most 60 s), then takes requests again.
        affinity: send the requests of one query (same first message) to the same server of a pool when it is not
            much busier than the others, so that server's prefix cache holds the prompt and the criteria turn.

    Endpoint pools: with ``base_urls=[...]`` every request goes to one server of the pool: its query's preferred
    server (affinity) unless that one is busier, else the one with the fewest requests in flight. A failed attempt
    is retried at once on another server in service (the back-off applies only when none is left), so a server that
    dies mid-run costs retries, not items. All servers must serve the same model with the same settings (the judge
    records one backend). Live per-server counters: :meth:`endpoint_stats`, and ``describe()["endpoints"]``.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        base_urls: Sequence[str] | None = None,
        api_key: str | None = None,
        timeout: float = 300.0,
        connect_timeout: float = 10.0,
        max_concurrency: int = 64,
        max_attempts: int = 6,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 60.0,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        send_template_kwargs: bool | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        context_length: int | None = None,
        transport: Transport | None = None,
        endpoint_max_concurrency: int | None = None,
        endpoint_requests_per_minute: float | None = None,
        eject_after: int = 3,
        eject_backoff: float = 1.0,
        affinity: bool = True,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigurationError("model must be the (non-empty) model name the server serves")
        for label, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if not value > 0:
                raise ConfigurationError(f"{label} must be > 0 seconds, got {value}")
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {max_attempts}")
        if backoff_initial < 0 or backoff_max < backoff_initial or max_retry_after < 0:
            raise ConfigurationError("need 0 <= backoff_initial <= backoff_max and max_retry_after >= 0")
        for label, rate in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
            if rate is not None and not rate > 0:
                raise ConfigurationError(f"{label} must be > 0 (or None for no limit), got {rate}")
        if endpoint_max_concurrency is not None and endpoint_max_concurrency < 1:
            raise ConfigurationError(f"endpoint_max_concurrency must be >= 1, got {endpoint_max_concurrency}")
        if endpoint_requests_per_minute is not None and not endpoint_requests_per_minute > 0:
            raise ConfigurationError(
                f"endpoint_requests_per_minute must be > 0 (or None for no limit), got {endpoint_requests_per_minute}"
            )
        if eject_after < 1 or not eject_backoff > 0:
            raise ConfigurationError("need eject_after >= 1 and eject_backoff > 0 seconds")
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ConfigurationError(
                f"max_tokens_field must be 'max_tokens' or 'max_completion_tokens', got {max_tokens_field!r}"
            )
        self._openai, self._tenacity = _import_deps()
        if transport is None:
            transport = "aiohttp" if _has_aiohttp() else "httpx"
        elif transport == "aiohttp" and not _has_aiohttp():
            raise BackendUnavailableError("transport='aiohttp' needs aiohttp: pip install 'ce-rm[openai]'")
        elif transport not in ("aiohttp", "httpx"):
            raise ConfigurationError(f"transport must be 'aiohttp' or 'httpx', got {transport!r}")

        self._model = model
        if base_url is not None and base_urls is not None:
            raise ConfigurationError("give base_url (one server) or base_urls (a pool), not both")
        if base_urls is not None:
            if isinstance(base_urls, str) or not base_urls or not all(isinstance(u, str) and u for u in base_urls):
                raise ConfigurationError("base_urls must be a non-empty list of URLs")
            urls = list(base_urls)
        else:
            urls = [base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"]
        addresses = [_Address.parse(url, api_key, extra_headers) for url in urls]
        clean = [a.url for a in addresses]
        if len(set(clean)) != len(clean):
            raise ConfigurationError(f"base_urls names a server twice: {[_public_url(u) for u in clean]}")
        self._addresses = addresses
        self._pooled = base_urls is not None
        self._base_url = addresses[0].url
        # The key lives only inside the clients (and in _secret, to scrub it from error text): never in describe().
        self._secret = api_key or os.environ.get("OPENAI_API_KEY") or ""
        secrets = [self._secret if a.auth_header is None else "" for a in addresses]
        secrets += [x for a in addresses for x in a.secrets]
        # Longest first, so a secret that contains another is replaced whole.
        self._scrubbed = sorted({x for x in secrets if len(x) >= 4}, key=len)[::-1]
        strict = all((urlsplit(u).hostname or "").lower() in _STRICT_HOSTS for u in clean)
        if send_template_kwargs is None and strict:
            send_template_kwargs = False
        # Auto mode (None): send until a server refuses the field, then stop.
        self._template_kwargs_auto = send_template_kwargs is None
        self._send_template_kwargs = send_template_kwargs is not False
        self._template_kwargs = {**PROTOCOL_TEMPLATE_KWARGS, **(chat_template_kwargs or {})}
        self._timeout = float(timeout)
        self._connect_timeout = float(min(connect_timeout, timeout))
        self._max_concurrency = max_concurrency
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._rpm = requests_per_minute
        self._tpm = tokens_per_minute
        self._extra_body = dict(extra_body or {})
        self._extra_headers = dict(extra_headers or {})
        self._max_tokens_field = max_tokens_field
        self._context_length = context_length
        self._transport: Transport = transport
        # What the server turned out to support (None: not seen yet).
        self._n_supported: bool | None = None
        self._logprobs_supported: bool | None = None

        self._lock = threading.Lock()
        self._closed = False
        self._io: _IOLoop | None = None
        self._client: Any = None
        self._holder: dict[str, Any] = {"clients": []}
        self._semaphore: asyncio.Semaphore | None = None
        self._affinity = affinity
        self._endpoint_max_concurrency = endpoint_max_concurrency
        self._endpoint_rpm = endpoint_requests_per_minute
        self._pool = EndpointPool(
            clean, max_concurrency_each=endpoint_max_concurrency, eject_after=eject_after, eject_backoff=eject_backoff
        )
        self._rpm_throttle = _Throttle(requests_per_minute) if requests_per_minute else None
        self._tpm_throttle = _Throttle(tokens_per_minute) if tokens_per_minute else None
        self._retrying = self._tenacity.AsyncRetrying(
            stop=self._tenacity.stop_after_attempt(max_attempts),
            wait=self._wait,
            retry=self._tenacity.retry_if_exception_type(_Retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        self._backoff = self._tenacity.wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max)
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- Backend interface -----------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self._model

    @property
    def context_length(self) -> int | None:
        return self._context_length

    @property
    def supports_logprobs(self) -> bool:
        # Optimistic until a server answers a logprobs request without them.
        return self._logprobs_supported is not False

    @property
    def n_supported(self) -> bool | None:
        """Whether the server honours ``n > 1`` (None until a request with ``n > 1`` has been answered)."""
        return self._n_supported

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            **(
                {
                    "base_urls": [_public_url(a.url) for a in self._addresses],
                    "endpoint_max_concurrency": self._endpoint_max_concurrency,
                    "endpoint_requests_per_minute": self._endpoint_rpm,
                    "endpoints": [e.to_dict() for e in self.endpoint_stats()],
                }
                if self._pooled
                else {"base_url": _public_url(self._base_url)}
            ),
            "timeout": self._timeout,
            "max_concurrency": self._max_concurrency,
            "max_attempts": self._max_attempts,
            "requests_per_minute": self._rpm,
            "tokens_per_minute": self._tpm,
            "chat_template_kwargs": self._sent_template_kwargs(),
            "extra_body": dict(self._extra_body),
            "max_tokens_field": self._max_tokens_field,
            "transport": self._transport,
        }

    def endpoint_stats(self) -> list[EndpointStats]:
        """Per-endpoint counters (requests, successes, failures, ejections, in flight, affinity hits), live."""
        return self._pool.stats()  # the pool holds the URLs without credentials or query

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        io = self._ensure_io()
        return io.run(self._generate_all(list(conversations), params))

    async def agenerate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        io = self._ensure_io()
        coro = self._generate_all(list(conversations), params)
        if asyncio.get_running_loop() is io.loop:
            return await coro
        future = io.submit(coro)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancelled() and not _current_task_cancelling():
                raise RuntimeError("the backend was closed while this call was running") from None
            raise

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()

    # -- the I/O loop and the client -------------------------------------------------------------------------------
    def _ensure_io(self) -> _IOLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("this OpenAIBackend was closed")
            if self._io is None:
                self._io = _IOLoop()
                # One finalizer for the loop and (once created, in the holder) the client: close() or garbage
                # collection or interpreter exit, whichever comes first, runs it once.
                self._finalizer = weakref.finalize(self, _shutdown, self._io, self._holder)
            return self._io

    def _client_on_loop(self) -> Any:
        """The AsyncOpenAI clients, one per endpoint, created on first use on the I/O loop (their connections belong
        to that loop). Returns the first endpoint's client."""
        if self._client is None:
            openai = self._openai
            per_endpoint = min(self._max_concurrency, self._endpoint_max_concurrency or self._max_concurrency)
            limits = _httpx().Limits(max_connections=per_endpoint, max_keepalive_connections=per_endpoint)
            timeout = _httpx().Timeout(self._timeout + 1.0, connect=self._connect_timeout)
            http_client_cls = (
                openai.DefaultAioHttpClient if self._transport == "aiohttp" else openai.DefaultAsyncHttpxClient
            )
            for endpoint, address in zip(self._pool.endpoints, self._addresses, strict=True):
                auth = {} if address.auth_header is None else {"Authorization": address.auth_header}
                client = openai.AsyncOpenAI(
                    api_key=(self._secret if address.auth_header is None else "") or _PLACEHOLDER_KEY,
                    base_url=address.url,
                    timeout=timeout,
                    max_retries=0,  # tenacity retries, with our own policy
                    default_headers={**auth, **self._extra_headers} or None,
                    default_query=address.default_query or None,
                    http_client=http_client_cls(limits=limits, timeout=timeout),
                )
                throttle = _Throttle(self._endpoint_rpm) if self._endpoint_rpm else None
                endpoint.payload = (client, throttle)
                self._holder["clients"].append(client)
            self._client = self._pool.endpoints[0].payload[0]
            self._semaphore = asyncio.Semaphore(self._max_concurrency)
        return self._client

    # -- generation ------------------------------------------------------------------------------------------------
    async def _generate_all(self, conversations: list[Conversation], params: SamplingParams) -> list[list[Completion]]:
        self._client_on_loop()
        if not conversations:
            return []
        return list(await asyncio.gather(*(self._samples(conv, params) for conv in conversations)))

    async def _samples(self, conversation: Conversation, params: SamplingParams) -> list[Completion]:
        """``params.n`` completions for one conversation, in one request when the server honours ``n``."""
        n = params.n
        if n == 1 or self._n_supported is False:
            if n == 1:
                return await self._request(conversation, params, n=1, sample=0)
            parts = await asyncio.gather(*(self._request(conversation, params, n=1, sample=s) for s in range(n)))
            return [c for part in parts for c in part]
        got = await self._request(conversation, params, n=n, sample=0)
        if len(got) >= n or got[0].finish_reason == "error":
            if len(got) >= n and self._n_supported is None:
                self._n_supported = True
            return got[:n] if len(got) >= n else got * n
        if self._n_supported is None:
            logger.info("the server at %s ignores n > 1; requesting samples one by one", _public_url(self._base_url))
        self._n_supported = False
        rest = await asyncio.gather(*(self._request(conversation, params, n=1, sample=s) for s in range(len(got), n)))
        return got + [c for part in rest for c in part]

    def _body(self, conversation: Conversation, params: SamplingParams, n: int, sample: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": conversation,
            self._max_tokens_field: params.max_new_tokens,
            "temperature": params.temperature,
        }
        if params.top_p != 1.0:
            body["top_p"] = params.top_p
        if n > 1:
            body["n"] = n
        if params.seed is not None:
            # Separate requests for the samples of one conversation must not share a seed (identical samples).
            body["seed"] = params.seed + sample
        if params.top_logprobs is not None:
            body["logprobs"] = True
            # llama.cpp returns no log-probabilities for logprobs=True alone: always say how many alternatives.
            body["top_logprobs"] = params.top_logprobs
        template_kwargs = self._sent_template_kwargs()
        if template_kwargs is not None:
            body["chat_template_kwargs"] = template_kwargs
        if self._extra_body:
            body.update(self._extra_body)
        return body

    def _sent_template_kwargs(self) -> dict[str, Any] | None:
        """The ``chat_template_kwargs`` field requests carry now (None: not sent)."""
        return dict(self._template_kwargs) if self._send_template_kwargs else None

    def _refused_template_kwargs(self, body: dict[str, Any], error: _Fatal) -> bool:
        """In auto mode, a 400/422 that names the field means this server does not take it: stop sending it."""
        if not self._template_kwargs_auto or "chat_template_kwargs" in self._extra_body:
            return False
        if "chat_template_kwargs" not in body or "chat_template_kwargs" not in str(error):
            return False
        if self._send_template_kwargs:  # the first refusal says so; requests already in flight just resend
            logger.info(
                "the server at %s refuses chat_template_kwargs; sending requests without it",
                _public_url(self._base_url),
            )
        self._send_template_kwargs = False
        return True

    async def _request(
        self, conversation: Conversation, params: SamplingParams, n: int, sample: int
    ) -> list[Completion]:
        """One HTTP request with retries. Never raises for a failed request: returns ``[Completion.failed(...)]``."""
        body = self._body(conversation, params, n, sample)
        estimate = 0.0
        if self._tpm_throttle is not None:
            estimate = sum(len(m["content"]) for m in conversation) / 4.0 + params.max_new_tokens * n
        retrying = self._retrying.copy()
        # The criteria turn and every evaluation of a query share the first message: one key sends them to one server.
        key = affinity_key(conversation[0]["content"]) if self._affinity and conversation else None
        tried: set[int] = set()  # endpoints this request failed on: the next attempt goes elsewhere when it can
        try:
            completions: list[Completion] = await retrying(self._attempt, body, params, estimate, key, tried)
            return completions
        except _Fatal as exc:
            if self._refused_template_kwargs(body, exc):
                return await self._request(conversation, params, n, sample)
            return [Completion.failed(self._scrub(str(exc)))]
        except _Retryable as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            return [Completion.failed(self._scrub(f"{exc} (gave up after {attempts} attempts)"))]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unforeseen client error: report it on this item, keep the others
            logger.exception("unexpected error in an openai request")
            return [Completion.failed(self._scrub(f"{type(exc).__name__}: {exc}"))]

    async def _attempt(
        self, body: dict[str, Any], params: SamplingParams, estimate: float, key: int | None, tried: set[int]
    ) -> list[Completion]:
        await self._throttle(estimate)
        assert self._semaphore is not None
        async with self._semaphore, self._pool.lease(key, frozenset(tried)) as endpoint:
            client, throttle = endpoint.payload
            if throttle is not None and (delay := throttle.reserve(1.0)) > 0:
                await asyncio.sleep(delay)
            try:
                payload = await self._post(body, client, endpoint.url)
                completions = self._parse(payload, params, body.get("n", 1))
            except _Retryable as exc:
                self._endpoint_failed(endpoint, tried, exc)
                raise
            self._pool.succeeded(endpoint)
        if self._tpm_throttle is not None:
            used = sum(c.completion_tokens for c in completions) + (completions[0].prompt_tokens if completions else 0)
            self._tpm_throttle.refund(estimate - used)
        return completions

    def _endpoint_failed(self, endpoint: Endpoint, tried: set[int], exc: _Retryable) -> None:
        tried.add(endpoint.index)
        if self._pool.failed(endpoint):
            logger.warning(
                "endpoint %s out of service for %.1f s after %d failures in a row (last: %s)",
                _public_url(endpoint.url),
                endpoint.backoff,
                endpoint.consecutive_failures,
                self._scrub(str(exc)),
            )
        # Another server in service that this request has not failed on: retry there at once, no back-off.
        exc.elsewhere = len(self._pool.endpoints) > 1 and self._pool.has_alternative(frozenset(tried))

    async def _throttle(self, estimate: float) -> None:
        delay = 0.0
        if self._rpm_throttle is not None:
            delay = self._rpm_throttle.reserve(1.0)
        if self._tpm_throttle is not None:
            delay = max(delay, self._tpm_throttle.reserve(estimate))
        if delay > 0:
            await asyncio.sleep(delay)

    async def _post(self, body: dict[str, Any], client: Any, url: str) -> Any:
        """POST /chat/completions through the official client; map every failure to _Retryable or _Fatal."""
        openai = self._openai
        where = f" at {_public_url(url)}" if self._pooled else ""
        try:
            async with _deadline(self._timeout):
                response = await client.post("/chat/completions", body=body, cast_to=_httpx().Response)
                raw = await response.aread()
        except openai.APIStatusError as exc:
            status = exc.status_code
            message = f"HTTP {status} from {_public_url(url)}: {_error_text(exc)}"
            if status < 500 and status not in _RETRIED_4XX:  # 400, 401, 403, 404, 422...: retrying cannot help
                raise _Fatal(message) from None
            raise _Retryable(message, _retry_after(exc.response.headers)) from None
        except TimeoutError:  # our own deadline for the whole attempt
            raise _Retryable(f"request timed out after {self._timeout:g} s{where}") from None
        except openai.APIConnectionError as exc:  # APITimeoutError included
            # The transports label some failures loosely (aiohttp's "server disconnected" arrives as a connect
            # timeout): name the innermost cause so the item's error says what really happened.
            root = _root_cause(exc)
            if isinstance(exc, openai.APITimeoutError) and root is exc.__cause__ and "Timeout" in type(root).__name__:
                raise _Retryable(f"request timed out ({type(root).__name__}){where}") from None
            raise _Retryable(f"connection error{where}: {type(root).__name__}: {root}") from None
        try:
            return json.loads(raw)
        except ValueError:
            snippet = raw[:120].decode("utf-8", "replace")
            raise _Retryable(f"malformed JSON in the server's answer{where}: {snippet!r}") from None

    def _parse(self, payload: Any, params: SamplingParams, n: int) -> list[Completion]:
        try:
            choices = sorted(payload["choices"], key=lambda c: c.get("index", 0))
            usage = payload.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            total = int(usage.get("completion_tokens") or 0)
            texts = [(c.get("message") or {}).get("content") or "" for c in choices]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _Retryable(f"malformed answer from the server (no usable 'choices'): {exc!r}") from None
        if not choices:
            raise _Retryable("malformed answer from the server: empty 'choices'")
        logprob_rows = [_logprobs(c.get("logprobs")) for c in choices] if params.top_logprobs is not None else None
        if logprob_rows is not None:
            got = all(row is not None for row in logprob_rows)
            if not got and self._logprobs_supported is None:
                logger.warning("the server at %s returned no log-probabilities", _public_url(self._base_url))
            self._logprobs_supported = got if self._logprobs_supported is None else self._logprobs_supported and got
        counts = _split_tokens(total, texts, logprob_rows)
        completions = []
        for i, choice in enumerate(choices):
            reason, error = _finish(choice.get("finish_reason"))
            completions.append(
                Completion(
                    text=texts[i],
                    finish_reason=reason,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=counts[i],
                    logprobs=None if logprob_rows is None else logprob_rows[i],
                    error=error,
                )
            )
        return completions

    # -- retry policy ----------------------------------------------------------------------------------------------
    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if getattr(exc, "elsewhere", False):
            return 0.0
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            # The server said when: wait that long (a little jitter so a crowd of clients does not return at once).
            return float(min(retry_after, self._max_retry_after) * (1.0 + 0.1 * _jitter()))
        return float(self._backoff(state))

    def _log_retry(self, state: Any) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.info(
            "openai request attempt %d/%d failed (%s); retrying in %.2f s",
            state.attempt_number,
            self._max_attempts,
            self._scrub(str(exc)),
            wait,
        )

    def _scrub(self, text: str) -> str:
        """Remove the API key, URL credentials and secret query values from text a server may have echoed them in."""
        for secret in self._scrubbed:
            text = text.replace(secret, "***")
        return text


# -- helpers --------------------------------------------------------------------------------------------------------
def _has_aiohttp() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def _httpx() -> Any:
    """The HTTP library the installed openai client is built on (httpx2 for openai >= 3, httpx before)."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


def _current_task_cancelling() -> bool:
    """Whether the caller's own task is being cancelled (then CancelledError is theirs to receive)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python >= 3.11
    return bool(cancelling()) if cancelling is not None else False


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def _jitter() -> float:
    import random

    return random.random()


if sys.version_info >= (3, 11):
    _deadline = asyncio.timeout
else:  # pragma: no cover - Python 3.10: a plain bound through wait_for is applied by the client timeout instead
    import contextlib

    @contextlib.asynccontextmanager
    async def _deadline(_seconds: float) -> Any:
        yield


def _error_text(exc: Any) -> str:
    """The server's own error message, short."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:500]
    text = getattr(exc, "message", None) or str(exc)
    return str(text)[:500]


def _finish(reason: Any) -> tuple[FinishReason, str | None]:
    if reason == "length":
        return "length", None
    if reason == "content_filter":
        return "error", "the server's content filter stopped the generation"
    return "stop", None


def _logprobs(block: Any) -> tuple[TokenLogprob, ...] | None:
    """Token log-probabilities in either shape servers use: chat (``content``) or legacy completions (``tokens``)."""
    if not isinstance(block, dict):
        return None
    content = block.get("content")
    if isinstance(content, list):
        return tuple(
            TokenLogprob(
                token=str(entry.get("token", "")),
                logprob=float(entry.get("logprob", -math.inf)),
                top=tuple(
                    (str(t.get("token", "")), float(t.get("logprob", -math.inf)))
                    for t in entry.get("top_logprobs") or ()
                ),
            )
            for entry in content
        )
    tokens, values = block.get("tokens"), block.get("token_logprobs")
    if isinstance(tokens, list) and isinstance(values, list):
        tops = block.get("top_logprobs") or [None] * len(tokens)
        return tuple(
            TokenLogprob(
                token=str(tok),
                logprob=float(lp) if lp is not None else -math.inf,
                top=tuple((str(k), float(v)) for k, v in (top or {}).items()),
            )
            for tok, lp, top in zip(tokens, values, tops, strict=False)
        )
    return None


def _split_tokens(
    total: int, texts: list[str], logprob_rows: list[tuple[TokenLogprob, ...] | None] | None
) -> list[int]:
    """Completion tokens per choice. ``usage`` counts all choices together: split it by the log-probability rows
    when every choice has them, else in proportion to text length (exact for one choice, the common case)."""
    if len(texts) == 1:
        return [total]
    if logprob_rows is not None and all(row is not None for row in logprob_rows):
        return [len(row or ()) for row in logprob_rows]
    chars = [len(t) for t in texts]
    whole = sum(chars)
    base = [total // len(texts)] * len(texts) if whole == 0 else [total * c // whole for c in chars]
    for i in range(total - sum(base)):
        base[i % len(base)] += 1
    return base
