"""Criteria caches: criteria are a per-query artifact, so a re-run (or another Judge on the same model) can reuse them.

A cached entry is one criteria generation, keyed by everything that decides its text: the model and backend, the
backend's settings (``Backend.describe()``: server URL, dtype, quantization, adapter and its content hash, revision,
engine settings; only settings that change speed or reliability, such as timeouts, concurrency or batch size, are
left out), the prompt-template version, the criteria turn's sampling settings (budget, temperature, top-p, seed), the
query, and the sample index (so the k samples of test-time scaling stay k distinct entries). Only successful
generations are stored; a failed one is never cached, so the next run tries again.

Caches written before the backend settings were part of the key (cerm 0.x files without the ``backend_settings``
column) still open: the column is added, and their old entries are never matched again (their keys lack the
settings, so they cannot be told apart by server or adapter). They stay in the file until ``clear()``.

When NOT to cache:

* when fresh diversity is the point: sampled criteria (``temperature > 0`` or ``k > 1``) are frozen by a cache, so
  every re-run sees the same k samples. That is what you want for reproducible evaluation, and what you do not want
  when training the judge itself (RL on criteria rollouts needs new samples every step);
* when the weights change under the same model id: during training, or after re-uploading a checkpoint under the same
  name, cached criteria belong to the old weights. Use a new cache (or ``clear()``) for every new set of weights;
* when the backend's settings do not show a change (a custom ``chat_template`` text edited in place, an adapter
  folder overwritten between runs of one process, a server that swapped its weights behind the same URL and model
  name): give each such configuration its own cache.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cerm.backends._base import Completion, SamplingParams

logger = logging.getLogger("cerm")

#: ``Backend.describe()`` keys that change how fast or how reliably text is generated, never which text: left out of
#: the cache key, so a re-run with another timeout, concurrency or batch size still finds its criteria.
OPERATIONAL_SETTINGS = frozenset(
    {
        "timeout",
        "max_concurrency",
        "max_attempts",
        "requests_per_minute",
        "tokens_per_minute",
        "transport",
        "batch_size",
        "share_prefix",
        "device",
        "endpoints",  # an endpoint pool's live counters
        "endpoint_max_concurrency",
        "endpoint_requests_per_minute",
    }
)


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """Canonical JSON of the backend settings that decide generated text (``OPERATIONAL_SETTINGS`` left out)."""
    kept = {k: v for k, v in settings.items() if k not in OPERATIONAL_SETTINGS}
    return json.dumps(kept, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class CriteriaCacheKey:
    """Everything that decides one criteria generation's text."""

    model: str
    backend: str
    prompt_version: str
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    query: str
    sample_index: int
    #: :func:`settings_fingerprint` of ``Backend.describe()``.
    backend_settings: str = "{}"

    @classmethod
    def for_sample(
        cls,
        *,
        model: str,
        backend: str,
        prompt_version: str,
        params: SamplingParams,
        query: str,
        sample_index: int,
        backend_settings: Mapping[str, Any] | None = None,
    ) -> CriteriaCacheKey:
        return cls(
            model=model,
            backend=backend,
            backend_settings=settings_fingerprint(backend_settings or {}),
            prompt_version=prompt_version,
            max_new_tokens=params.max_new_tokens,
            # Greedy decoding ignores top-p: normalise it so greedy entries do not split on an unused setting.
            temperature=float(params.temperature),
            top_p=1.0 if params.greedy else float(params.top_p),
            seed=None if params.greedy else params.seed,
            query=query,
            sample_index=sample_index,
        )

    def digest(self) -> str:
        """A stable SHA-256 of the key (canonical JSON), used as the storage key."""
        fields = asdict(self)
        fields["key_version"] = 2  # 2: backend settings in the key; version-1 digests never match again
        canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_storable(value: Completion) -> None:
    if value.finish_reason == "error":
        raise ValueError("only successful criteria generations can be cached, got a failed one")


def _strip(value: Completion) -> Completion:
    # Token log-probabilities of the criteria turn are never used downstream; keep entries small.
    return Completion(value.text, value.finish_reason, value.prompt_tokens, value.completion_tokens)


class CriteriaCache(abc.ABC):
    """Where a :class:`cerm.Judge` keeps criteria generations (``Judge(..., cache=...)``).

    ``hits`` and ``misses`` count lookups since creation (per process). Implementations must be safe to share between
    threads.
    """

    def __init__(self) -> None:
        self._stats_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CriteriaCacheKey) -> Completion | None:
        """The cached criteria generation for ``key``, or None."""
        value = self._get(key.digest())
        with self._stats_lock:
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
        return value

    def put(self, key: CriteriaCacheKey, value: Completion) -> None:
        """Store a successful generation (a failed one raises ValueError: errors are never cached)."""
        _check_storable(value)
        self._put(key, _strip(value))

    @abc.abstractmethod
    def _get(self, digest: str) -> Completion | None: ...

    @abc.abstractmethod
    def _put(self, key: CriteriaCacheKey, value: Completion) -> None: ...

    @abc.abstractmethod
    def clear(self) -> None:
        """Remove every entry."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (files). Safe to call twice."""


class MemoryCriteriaCache(CriteriaCache):
    """An in-process LRU cache of at most ``maxsize`` criteria generations (least recently used evicted first)."""

    def __init__(self, maxsize: int = 4096) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        super().__init__()
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._data: OrderedDict[str, Completion] = OrderedDict()

    def _get(self, digest: str) -> Completion | None:
        with self._lock:
            value = self._data.get(digest)
            if value is not None:
                self._data.move_to_end(digest)
            return value

    def _put(self, key: CriteriaCacheKey, value: Completion) -> None:
        digest = key.digest()
        with self._lock:
            self._data[digest] = value
            self._data.move_to_end(digest)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryCriteriaCache(maxsize={self.maxsize}, entries={len(self)})"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS criteria (
    digest TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    backend TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    sampling TEXT NOT NULL,
    query TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    backend_settings TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""


class SQLiteCriteriaCache(CriteriaCache):
    """A criteria cache in an SQLite file: survives restarts, shared by threads and processes.

    Each thread (and each process, also after ``fork``) opens its own connection; the database runs in WAL mode so
    readers never block the writer, and a busy timeout makes concurrent writers wait instead of failing. Entries are
    human-readable (model, prompt version, sampling settings, query and sample index are columns) so a cache can be
    inspected or pruned with the ``sqlite3`` shell.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = timeout
        self._local = threading.local()
        self._all_lock = threading.Lock()
        self._all: list[tuple[int, sqlite3.Connection]] = []
        self._closed = False
        conn = self._connection()
        conn.execute(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(criteria)")}
        if "backend_settings" not in columns:
            # A file from before the backend settings joined the key: its entries can no longer be matched.
            conn.execute("ALTER TABLE criteria ADD COLUMN backend_settings TEXT NOT NULL DEFAULT ''")
            logger.info("criteria cache %s predates backend settings in the key: its old entries are not reused", path)

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"this SQLiteCriteriaCache ({self.path}) was closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            # A connection must not cross a fork: open a fresh one in the child.
            conn = sqlite3.connect(self.path, timeout=self._timeout, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._all_lock:
                self._all.append((os.getpid(), conn))
        return conn

    def _get(self, digest: str) -> Completion | None:
        conn = self._connection()
        row = conn.execute(
            "SELECT text, finish_reason, prompt_tokens, completion_tokens FROM criteria WHERE digest = ?",
            (digest,),
        ).fetchone()
        if row is None:
            return None
        text, finish_reason, prompt_tokens, completion_tokens = row
        return Completion(str(text), finish_reason, int(prompt_tokens), int(completion_tokens))

    def _put(self, key: CriteriaCacheKey, value: Completion) -> None:
        sampling = json.dumps(
            {
                "max_new_tokens": key.max_new_tokens,
                "temperature": key.temperature,
                "top_p": key.top_p,
                "seed": key.seed,
            },
            sort_keys=True,
        )
        conn = self._connection()
        conn.execute(
            "INSERT OR REPLACE INTO criteria (digest, model, backend, prompt_version, sampling, query, sample_index,"
            " backend_settings, text, finish_reason, prompt_tokens, completion_tokens)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.digest(),
                key.model,
                key.backend,
                key.prompt_version,
                sampling,
                key.query,
                key.sample_index,
                key.backend_settings,
                value.text,
                value.finish_reason,
                value.prompt_tokens,
                value.completion_tokens,
            ),
        )

    def clear(self) -> None:
        conn = self._connection()
        conn.execute("DELETE FROM criteria")

    def __len__(self) -> int:
        conn = self._connection()
        (count,) = conn.execute("SELECT COUNT(*) FROM criteria").fetchone()
        return int(count)

    def close(self) -> None:
        with self._all_lock:
            connections, self._all = self._all, []
        for pid, conn in connections:
            if pid == os.getpid():  # a parent's connection inherited through fork is not ours to close
                conn.close()
        self._closed = True

    def __enter__(self) -> SQLiteCriteriaCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteCriteriaCache({str(self.path)!r})"
