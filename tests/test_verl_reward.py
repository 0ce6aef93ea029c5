"""veRL custom reward: both calling conventions, explicit unscorable value, query from extra_info."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from _integration_helpers import failing_judge, mock_judge
from _openai_servers import FaultServer
from cerm import Judge, JudgeConfig
from cerm.integrations import JudgeUnavailableError, VerlReward
from cerm.integrations.verl import JudgeSettings, judge_settings


def test_naive_and_batch_conventions() -> None:
    judge, backend = mock_judge()
    reward = VerlReward(judge, unscorable_score=0.0, scale=(0, 1))
    single = reward(data_source="demo", solution_str="Paris", ground_truth=None, extra_info={"question": "Capital?"})
    assert isinstance(single, dict)
    assert set(single) == {"score", "scorable", "errored", "reason"}
    assert single["scorable"] is True
    assert 0 <= single["score"] <= 1
    assert single["reason"] == ""
    backend.calls.clear()
    batch = reward(
        data_sources=["demo"] * 4,
        solution_strs=["Paris", "Lyon", "UNSCORABLE", "Nice"],
        ground_truths=[None] * 4,
        extra_infos=[{"question": "Capital?"}] * 3 + [{"question": "Other?"}],
    )
    assert len(batch) == 4
    assert len(backend.calls) == 2  # one criteria call (2 queries), one evaluation call
    assert batch[0] == single
    assert batch[2] == {"score": 0.0, "scorable": False, "errored": False, "reason": batch[2]["reason"]}
    assert batch[2]["reason"]
    assert all(type(b["score"]) is float for b in batch)


def test_float_form_query_keys_and_messages() -> None:
    judge, backend = mock_judge()
    reward = VerlReward(judge, unscorable_score=-5.0, return_dict=False, query_keys=("prompt",))
    value = reward.compute_score(
        solution_str="x",
        extra_info={"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "Hi?"}]},
    )
    assert isinstance(value, float)
    assert 0 <= value <= 10
    assert "Hi?" in backend.calls[0][0][0][0]["content"]
    assert reward.compute_score(solution_str="UNSCORABLE", extra_info={"prompt": "Hi?"}) == -5.0


def test_misconfiguration_is_an_error_not_a_reward() -> None:
    judge, _ = mock_judge()
    with pytest.raises(TypeError, match="unscorable_score"):
        VerlReward(judge)  # type: ignore[call-arg]
    reward = VerlReward(judge, unscorable_score=0.0)
    with pytest.raises(ValueError, match="question"):
        reward(data_source="d", solution_str="x", ground_truth="y", extra_info={"index": 3})
    with pytest.raises(TypeError):
        reward("positional")


def test_errored_judgment_raises_by_default_and_the_fallback_is_explicit() -> None:
    judge, _ = failing_judge("boom")
    batch = {
        "data_sources": ["d"] * 3,
        "solution_strs": ["fine", "boom", "UNSCORABLE"],
        "ground_truths": [None] * 3,
        "extra_infos": [{"question": "Q"}] * 3,
    }
    strict = VerlReward(judge, unscorable_score=0.0)
    with pytest.raises(JudgeUnavailableError, match=r"1 of 3 responses got no judgment.*unreachable"):
        strict(**batch)
    with pytest.raises(JudgeUnavailableError):
        strict(data_source="d", solution_str="boom", extra_info={"question": "Q"})
    with pytest.raises(JudgeUnavailableError):
        asyncio.run(strict.acompute_score_batch(**batch))
    fallback = VerlReward(judge, unscorable_score=0.0, error_score=-1.0)
    out = fallback(**batch)
    assert isinstance(out, list)
    assert out[0]["scorable"] is True
    assert out[0]["errored"] is False
    assert out[1] == {"score": -1.0, "scorable": False, "errored": True, "reason": out[1]["reason"]}
    assert "unreachable" in out[1]["reason"]
    assert out[2] == {"score": 0.0, "scorable": False, "errored": False, "reason": out[2]["reason"]}
    assert VerlReward(judge, unscorable_score=0.0, error_score=-2.0, return_dict=False)(**batch)[1] == -2.0
    with pytest.raises(TypeError, match="error_score"):
        VerlReward(judge, unscorable_score=0.0, error_score="0")  # type: ignore[arg-type]


def test_lazy_factory_and_async() -> None:
    built = []

    def factory() -> Judge:
        built.append(1)
        return mock_judge()[0]

    reward = VerlReward(factory, unscorable_score=0.0)
    assert built == []  # nothing loads at import/definition time
    out = asyncio.run(reward.acompute_score_batch(solution_strs=["a", "b"], extra_infos=[{"question": "Q"}] * 2))
    assert len(out) == 2
    assert built == [1]
    assert asyncio.run(reward.acompute_score(solution_str="a", extra_info={"question": "Q"})) == out[0]
    assert built == [1]


@pytest.mark.model
def test_batch_form_with_the_demo_judge() -> None:
    judge = Judge("demo-base", config=JudgeConfig(criteria_max_new_tokens=8, evaluation_max_new_tokens=8))
    reward = VerlReward(judge, unscorable_score=0.0, scale=(0, 1))
    out = reward(
        data_sources=["demo", "demo"],
        solution_strs=["Paris is the capital.", "Berlin."],
        ground_truths=["Paris", "Paris"],
        extra_infos=[{"question": "What is the capital of France?"}] * 2,
    )
    assert len(out) == 2
    for item in out:
        assert isinstance(item["score"], float)
        assert item["scorable"] or (item["score"] == 0.0 and item["reason"])
    judge.close()


def test_outage_of_an_openai_compatible_judge_raises_in_verl() -> None:
    """Fault injection over real HTTP: the judge's server fails every attempt for one response."""
    from cerm.backends.openai import OpenAIBackend

    fault = FaultServer(schedule={"flaky": ["503", "503"]})
    with fault.running():
        backend = OpenAIBackend(
            "judge-model", base_url=fault.base_url, api_key="sk-test", max_attempts=2, backoff_initial=0.01, timeout=5
        )
        judge = Judge(backend, config=JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32))
        reward = VerlReward(judge, unscorable_score=0.0)
        with pytest.raises(JudgeUnavailableError, match="HTTP 503"):
            reward(solution_strs=["score=6 ok", "score=6 flaky"], extra_infos=[{"question": "Q"}] * 2)
        # Once the server answers again, the same call is rewarded.
        assert [r["score"] for r in reward(solution_strs=["score=6 flaky"], extra_infos=[{"question": "Q"}])] == [6.0]
        backend.close()
    assert fault.count("flaky") == 3


# -- a judge chosen by configuration alone (veRL's reward_kwargs, the environment, veRL's reward model router) --------
def test_judge_settings_precedence() -> None:
    tokenizer = type("Tok", (), {"name_or_path": "/models/ce-rm"})()
    router = {"reward_router_address": "10.0.0.5:8123", "reward_model_tokenizer": tokenizer}
    assert judge_settings({}, {}) == JudgeSettings("demo")
    assert judge_settings(router, {}) == JudgeSettings("/models/ce-rm", "http://10.0.0.5:8123/v1")
    env = {"CERM_JUDGE": "env-model", "CERM_JUDGE_BASE_URL": "http://env/v1", "CERM_CRITERIA_CACHE": "/tmp/c.sqlite"}
    assert judge_settings(router, env) == JudgeSettings("env-model", "http://env/v1", "/tmp/c.sqlite")
    kwargs = {"judge_model": "kw-model", "judge_base_url": "http://kw/v1", "criteria_cache": "/kw.sqlite", **router}
    assert judge_settings(kwargs, env) == JudgeSettings("kw-model", "http://kw/v1", "/kw.sqlite")
    with pytest.raises(ValueError, match="judge_model"):
        judge_settings({"reward_router_address": "h:1"}, {})
    with pytest.raises(TypeError, match="judge_model"):
        judge_settings({"judge_model": 3}, {})


def test_configured_reward_calls_the_judge_server_its_kwargs_name(tmp_path: Path) -> None:
    with FaultServer().running() as server:
        config = JudgeConfig(criteria_max_new_tokens=16, evaluation_max_new_tokens=16)
        reward = VerlReward.configured(unscorable_score=-1.0, config=config, environ={})
        kwargs = {"judge_model": "m", "judge_base_url": server.base_url, "criteria_cache": str(tmp_path / "c.sqlite")}
        info = {"question": "What is 2+2?"}
        first = reward(data_source="d", solution_str="score=7", ground_truth="", extra_info=info, **kwargs)
        second = reward(data_source="d", solution_str="score=3", ground_truth="", extra_info=info, **kwargs)
        assert (first["score"], second["score"]) == (7.0, 3.0)
        assert sum(1 for s in server.seen if len(s.body["messages"]) == 1) == 1  # criteria from the shared cache
        assert {s.body["model"] for s in server.seen} == {"m"}
        # A fresh reward function (another veRL worker process) on the same cache file: no criteria turn at all.
        other = VerlReward.configured(unscorable_score=-1.0, config=config, environ={})
        assert other(data_source="d", solution_str="score=9", ground_truth="", extra_info=info, **kwargs)["score"] == 9
        assert sum(1 for s in server.seen if len(s.body["messages"]) == 1) == 1


def test_concurrent_responses_of_a_prompt_share_one_criteria_turn(tmp_path: Path) -> None:
    """veRL 0.9 scores each response alone, from several threads at once: while a prompt's criteria are not cached,
    one call generates them and the others wait for them, instead of each paying (and maybe differing in) its own."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    n = 8
    all_checked = threading.Barrier(n, timeout=60)
    seen = threading.local()

    class Gated(VerlReward):
        def _uncached(self, judge: Judge, items: Any) -> list[str]:  # type: ignore[override]
            missing = VerlReward._uncached(judge, items)
            if not getattr(seen, "once", False):  # every thread has found the criteria missing before any goes on
                seen.once = True
                all_checked.wait()
            return missing

    with FaultServer().running() as server:
        config = JudgeConfig(criteria_max_new_tokens=16, evaluation_max_new_tokens=16)
        reward = Gated.configured(unscorable_score=-1.0, config=config, environ={})
        kwargs = {"judge_model": "m", "judge_base_url": server.base_url, "criteria_cache": str(tmp_path / "c.sqlite")}
        info = {"question": "What is 2+2?"}
        with ThreadPoolExecutor(n) as pool:
            results = list(
                pool.map(
                    lambda s: reward(data_source="d", solution_str=f"score={s}", extra_info=info, **kwargs), range(n)
                )
            )
    assert [r["score"] for r in results] == [float(s) for s in range(n)]
    assert sum(1 for s in server.seen if len(s.body["messages"]) == 1) == 1


def _score_in_a_worker_process(barrier: Any, results: Any, base_url: str, cache: str, score: int) -> None:
    """One veRL reward worker process: finds the prompt's criteria missing, waits until the other process has too,
    then scores its response."""
    passed = []

    class Gated(VerlReward):
        def _uncached(self, judge: Judge, items: Any) -> list[str]:  # type: ignore[override]
            missing = VerlReward._uncached(judge, items)
            if not passed:
                passed.append(True)
                barrier.wait()
            return missing

    config = JudgeConfig(criteria_max_new_tokens=16, evaluation_max_new_tokens=16)
    reward = Gated.configured(unscorable_score=-1.0, config=config, environ={})
    kwargs = {"judge_model": "m", "judge_base_url": base_url, "criteria_cache": cache}
    result = reward(data_source="d", solution_str=f"score={score}", extra_info={"question": "What is 2+2?"}, **kwargs)
    results.put(result["score"])


def test_worker_processes_sharing_a_cache_file_share_one_criteria_turn(tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2, timeout=120), context.Queue()
    with FaultServer().running() as server:
        workers = [
            context.Process(
                target=_score_in_a_worker_process,
                args=(barrier, results, server.base_url, str(tmp_path / "c.sqlite"), score),
            )
            for score in (4, 6)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
        assert [w.exitcode for w in workers] == [0, 0]
        assert sorted(results.get(timeout=10) for _ in workers) == [4.0, 6.0]
    assert sum(1 for s in server.seen if len(s.body["messages"]) == 1) == 1
