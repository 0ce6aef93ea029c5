"""The criteria cache: hits avoid backend calls (counted), k samples stay distinct, errors are never cached, the SQLite
cache is shared by threads and survives a process restart (two real subprocesses on the demo model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cerm import (
    Completion,
    CriteriaCacheKey,
    Judge,
    JudgeConfig,
    MemoryCriteriaCache,
    SamplingParams,
    SQLiteCriteriaCache,
)
from cerm.backends import Backend, InstrumentedBackend, MockBackend
from cerm.protocol import Conversation

SRC = Path(__file__).resolve().parents[1] / "src"
CRITERIA = "Analysis.\n[Start of Criteria]\n1. Accuracy: correct facts\n[End of Criteria]"


def _responder(conversation: Conversation, params: SamplingParams, sample: int) -> str:
    if len(conversation) == 1:
        return f"{CRITERIA}\nsample {sample} t={params.temperature}"
    return "Accuracy: fine $\\boxed{4}$\nOverall $\\boxed{7}$"


def _criteria_calls(backend: MockBackend) -> int:
    return sum(1 for convs, _ in backend.calls if convs and len(convs[0]) == 1)


def test_memory_cache_hits_skip_the_criteria_generation() -> None:
    backend = MockBackend(_responder)
    cache = MemoryCriteriaCache()
    judge = Judge(backend, cache=cache)
    first = judge.judge_batch([("q1", ["a", "b"]), ("q2", ["c"])])
    assert _criteria_calls(backend) == 1
    assert len(backend.calls) == 2
    assert len(cache) == 2
    assert (cache.hits, cache.misses) == (0, 2)
    assert not first[0][0].provenance.criteria_cached
    assert first[0][0].provenance.criteria_usage.completion_tokens > 0

    again = judge.judge_batch([("q1", ["a", "b"]), ("q2", ["c"])])
    assert _criteria_calls(backend) == 1  # no new criteria call: both queries hit
    assert len(backend.calls) == 3  # only the evaluation call ran
    assert (cache.hits, cache.misses) == (2, 2)
    assert all(j.provenance.criteria_cached for row in again for j in row)
    assert again[0][0].provenance.criteria_usage.total_tokens == 0  # nothing was generated for the criteria
    assert [j.score for row in again for j in row] == [j.score for row in first for j in row]
    assert again[0][0].criteria == first[0][0].criteria

    # A new query misses; the known one hits; only the new one goes to the backend.
    judge.judge_batch([("q1", ["a"]), ("q3", ["d"])])
    criteria_requests = [convs for convs, _ in backend.calls if convs and len(convs[0]) == 1]
    assert len(criteria_requests) == 2
    assert len(criteria_requests[-1]) == 1
    assert "q3" in criteria_requests[-1][0][0]["content"]


def test_stage_one_alone_uses_the_cache_too() -> None:
    backend = MockBackend(_responder)
    judge = Judge(backend, cache=MemoryCriteriaCache())
    assert judge.criteria("q").text == judge.criteria("q").text
    assert len(backend.calls) == 1


def test_k_samples_stay_distinct_and_rerun_hits() -> None:
    backend = MockBackend(_responder)
    cache = MemoryCriteriaCache()
    config = JudgeConfig(k=3, seed=1)
    judge = Judge(backend, config=config, cache=cache)
    first = judge.judge("q", ["a"])[0]
    texts = [c.criteria.text for c in first.chains]
    assert len(set(texts)) == 3
    assert len(cache) == 3
    again = judge.judge("q", ["a"])[0]
    assert [c.criteria.text for c in again.chains] == texts  # same sample index -> same criteria, in order
    assert _criteria_calls(backend) == 1
    # Different sampling settings are a different key: greedy k=1 misses and adds its own entry.
    Judge(backend, cache=cache).judge("q", ["a"])
    assert _criteria_calls(backend) == 2
    assert len(cache) == 4


def test_partial_hit_keeps_cached_samples() -> None:
    backend = MockBackend(_responder)
    cache = MemoryCriteriaCache()
    Judge(backend, config=JudgeConfig(k=2, seed=3), cache=cache).judge("q", ["a"])
    wider = Judge(backend, config=JudgeConfig(k=3, seed=3), cache=cache).judge("q", ["a"])[0]
    assert len(cache) == 3
    assert not wider.provenance.criteria_cached  # one sample had to be generated


def test_failed_generations_are_never_cached() -> None:
    failing = {"on": True}

    def responder(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if len(conversation) == 1 and failing["on"]:
            return Completion.failed("server said 503")
        return _responder(conversation, params, sample)

    backend = MockBackend(responder)
    cache = MemoryCriteriaCache()
    judge = Judge(backend, cache=cache)
    assert judge.judge("q", ["a"])[0].score is None
    assert len(cache) == 0
    failing["on"] = False
    assert judge.judge("q", ["a"])[0].score == 7.0  # retried, not replayed
    assert len(cache) == 1
    with pytest.raises(ValueError, match="only successful"):
        cache.put(_key(), Completion.failed("x"))


def _key(
    query: str = "q",
    index: int = 0,
    *,
    model: str = "m",
    prompt_version: str = "v",
    params: SamplingParams | None = None,
) -> CriteriaCacheKey:
    return CriteriaCacheKey.for_sample(
        model=model,
        backend="b",
        prompt_version=prompt_version,
        params=params or SamplingParams(),
        query=query,
        sample_index=index,
    )


def test_key_separates_everything_that_changes_the_text() -> None:
    base = _key()
    variants = {
        _key(index=1).digest(),
        _key(query="q2").digest(),
        _key(model="m2").digest(),
        _key(prompt_version="v2").digest(),
        _key(params=SamplingParams(max_new_tokens=7)).digest(),
        _key(params=SamplingParams(temperature=0.7, seed=1)).digest(),
        _key(params=SamplingParams(temperature=0.7, seed=2)).digest(),
    }
    assert base.digest() not in variants
    assert len(variants) == 7
    # n (how many samples one call makes) is not part of the key: the sample index is.
    assert _key().digest() == _key(params=SamplingParams(n=4)).digest()


def test_memory_cache_is_a_bounded_lru() -> None:
    cache = MemoryCriteriaCache(maxsize=2)
    for q in ("a", "b"):
        cache.put(_key(q), Completion(q, "stop"))
    assert cache.get(_key("a")) is not None  # "a" is now the most recently used
    cache.put(_key("c"), Completion("c", "stop"))
    assert len(cache) == 2
    assert cache.get(_key("b")) is None
    assert cache.get(_key("a")) is not None
    assert cache.get(_key("c")) is not None
    with pytest.raises(ValueError, match="maxsize"):
        MemoryCriteriaCache(maxsize=0)


def test_sqlite_cache_roundtrip_threads_and_judge_path(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "criteria.sqlite"
    with SQLiteCriteriaCache(path) as cache:
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(25):
                    cache.put(_key(f"q{t}-{i}"), Completion(f"text {t} {i}", "length", 5, 6))
                    assert cache.get(_key(f"q{t}-{i}")) == Completion(f"text {t} {i}", "length", 5, 6)
            except BaseException as exc:  # collected and re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert len(cache) == 100
        mode = cache._connection().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        cache.clear()
        assert len(cache) == 0

    # A path given to the Judge opens (and, on close, releases) an SQLite cache.
    backend = MockBackend(_responder)
    with Judge(backend, cache=str(path)) as judge:
        assert isinstance(judge.cache, SQLiteCriteriaCache)
        judge.judge("q", ["a"])
    with Judge(backend, cache=path) as judge:
        assert judge.judge("q", ["a"])[0].provenance.criteria_cached
    assert _criteria_calls(backend) == 1
    with pytest.raises(TypeError, match="cache must be"):
        Judge(backend, cache=42)  # type: ignore[arg-type]


def test_sqlite_cache_shared_across_processes(tmp_path: Path) -> None:
    """Four processes write and read one file at the same time (WAL + busy timeout): no lost or broken entries."""
    path = tmp_path / "shared.sqlite"
    script = (
        "import sys\n"
        "from cerm import SQLiteCriteriaCache, CriteriaCacheKey, Completion, SamplingParams\n"
        "cache = SQLiteCriteriaCache(sys.argv[1])\n"
        "w = sys.argv[2]\n"
        "for i in range(40):\n"
        "    key = CriteriaCacheKey.for_sample(model='m', backend='b', prompt_version='v', params=SamplingParams(),"
        " query=f'{w}-{i}', sample_index=0)\n"
        "    cache.put(key, Completion(f'{w}-{i}', 'stop'))\n"
        "    assert cache.get(key).text == f'{w}-{i}'\n"
        "cache.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), str(w)], env=env, stderr=subprocess.PIPE, text=True)
        for w in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with SQLiteCriteriaCache(path) as cache:
        assert len(cache) == 160


# -- the real model -------------------------------------------------------------------------------------------------


@pytest.mark.model
def test_demo_model_rerun_hits_the_cache(demo_backend: Backend) -> None:
    counting = InstrumentedBackend(demo_backend)
    config = JudgeConfig(criteria_max_new_tokens=24, evaluation_max_new_tokens=8)
    judge = Judge(counting, config=config, cache=MemoryCriteriaCache())
    first = judge.judge("Name a primary colour.", ["Red.", "Seven."])
    assert counting.conversations_per_call == [1, 2]  # one criteria conversation, two evaluations
    again = judge.judge("Name a primary colour.", ["Red.", "Seven."])
    assert counting.conversations_per_call == [1, 2, 2]  # the criteria turn was not generated again
    assert again[0].criteria == first[0].criteria
    assert again[0].criteria.text
    assert again[0].provenance.criteria_cached
    assert not first[0].provenance.criteria_cached
    # Greedy evaluation under the same criteria gives the same verdicts as the uncached run.
    assert [j.evaluation.text for j in again] == [j.evaluation.text for j in first]  # type: ignore[union-attr]


_RESTART_SCRIPT = """
import json, sys
from cerm import Judge, JudgeConfig, SQLiteCriteriaCache
from cerm.backends.hf import HFBackend

backend = HFBackend("demo-base", device="cpu")
calls = []
inner = backend.generate
def counted(conversations, params):
    calls.append([len(c) for c in conversations])
    return inner(conversations, params)
backend.generate = counted
config = JudgeConfig(criteria_max_new_tokens=24, evaluation_max_new_tokens=8)
with Judge(backend, config=config, cache=SQLiteCriteriaCache(sys.argv[1])) as judge:
    j = judge.judge("Name a primary colour.", ["Red."])[0]
print(json.dumps({"calls": calls, "cached": j.provenance.criteria_cached, "criteria": j.criteria.text}))
"""


@pytest.mark.model
def test_sqlite_cache_survives_a_process_restart(tmp_path: Path) -> None:
    path = tmp_path / "criteria.sqlite"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _RESTART_SCRIPT, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["calls"] == [[1], [3]]  # criteria (1 message), then the evaluation (3 messages)
    assert not first["cached"]
    assert second["calls"] == [[3]]  # the new process generated no criteria: they came from the file
    assert second["cached"]
    assert second["criteria"] == first["criteria"]
    assert first["criteria"]


def test_key_includes_the_backend_settings_that_change_the_text() -> None:
    params = SamplingParams()

    def key(settings: dict[str, object] | None) -> str:
        return CriteriaCacheKey.for_sample(
            model="m",
            backend="b",
            prompt_version="v",
            params=params,
            query="q",
            sample_index=0,
            backend_settings=settings,
        ).digest()

    plain = key({"dtype": "bfloat16", "adapter_sha256": "aa", "base_url": "http://a/v1", "batch_size": 8})
    assert key({"dtype": "bfloat16", "adapter_sha256": "aa", "base_url": "http://a/v1", "batch_size": 32}) == plain
    assert key({"dtype": "float16", "adapter_sha256": "aa", "base_url": "http://a/v1", "batch_size": 8}) != plain
    assert key({"dtype": "bfloat16", "adapter_sha256": "bb", "base_url": "http://a/v1", "batch_size": 8}) != plain
    assert key({"dtype": "bfloat16", "adapter_sha256": "aa", "base_url": "http://b/v1", "batch_size": 8}) != plain


def test_a_cache_file_from_before_backend_settings_opens_and_its_entries_are_not_reused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    # The schema and one entry as the previous version wrote them (its digest had no backend settings in it).
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE criteria (digest TEXT PRIMARY KEY, model TEXT NOT NULL, backend TEXT NOT NULL,"
            " prompt_version TEXT NOT NULL, sampling TEXT NOT NULL, query TEXT NOT NULL, sample_index INTEGER NOT"
            " NULL, text TEXT NOT NULL, finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,"
            " completion_tokens INTEGER NOT NULL, created REAL NOT NULL DEFAULT (julianday('now')))"
        )
        old_digest = "0" * 64
        conn.execute(
            "INSERT INTO criteria VALUES (?, 'mock-judge', 'mock', 'ce-rm-v1', '{}', 'q', 0, 'old criteria', 'stop',"
            " 1, 1, julianday('now'))",
            (old_digest,),
        )
    backend = MockBackend(lambda conversation, params, sample: CRITERIA if len(conversation) == 1 else "\\boxed{6}")
    with SQLiteCriteriaCache(path) as cache:
        assert len(cache) == 1  # the old entry is still there (until clear())...
        judgment = Judge(backend, cache=cache).judge("q", ["a"])[0]
        assert judgment.criteria is not None
        assert judgment.criteria.text == CRITERIA  # ...but never reused: generated afresh
        assert cache.misses == 1
        assert len(cache) == 2
        again = Judge(backend, cache=cache).judge("q", ["a"])[0]
        assert again.provenance.criteria_cached  # the new entry is
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT backend_settings FROM criteria WHERE digest != ?", (old_digest,)).fetchone()
    assert json.loads(stored[0]) == {"backend": "mock", "model": "mock-judge"}
