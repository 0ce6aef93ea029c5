"""TRL reward functions: grouping and None handling on a scripted judge; real GRPO steps on CPU with the demo judge."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest

from _integration_helpers import failing_judge, mock_judge, scripted_score, tiny_policy
from _openai_servers import FaultServer
from cerm import Judge, JudgeConfig, Status
from cerm.integrations import AsyncCermRewardFunc, CermRewardFunc


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_groups_completions_by_prompt_in_one_judge_call() -> None:
    judge, backend = mock_judge()
    reward = CermRewardFunc(judge)
    prompts = ["Q1", "Q1", "Q1", "Q2", "Q2", "Q2"]
    completions = ["a", "bb", "ccc", "d", "ee", "fff"]
    rewards = reward(prompts=prompts, completions=completions, completion_ids=[[1]] * 6)
    assert len(rewards) == 6
    # One criteria call for both distinct prompts, one evaluation call for all six completions.
    assert len(backend.calls) == 2
    assert len(backend.calls[0][0]) == 2
    assert len(backend.calls[1][0]) == 6
    # The same criteria text is reused for every completion of a prompt (unified criteria).
    evals = backend.calls[1][0]
    assert len({c[1]["content"] for c in evals}) == 1
    assert all(isinstance(r, float) and 0 <= r <= 10 for r in rewards)
    assert [j.score for j in reward.last_judgments if j] == rewards


def test_chat_format_scaling_none_and_log_hooks() -> None:
    judge, backend = mock_judge()
    logged: dict[str, Any] = {}
    reward = CermRewardFunc(judge, scale=(0, 1), name="ce_rm")
    assert reward.__name__ == "ce_rm"
    prompts = [_chat("What is 2+2?")] * 3
    completions = [
        [{"role": "assistant", "content": "4"}],
        [{"role": "assistant", "content": "UNSCORABLE please"}],
        [{"role": "assistant", "content": ""}],
    ]
    rewards = reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1]] * 3,
        trainer_state=None,
        log_metric=lambda name, value: logged.setdefault(name, value),
        log_extra=lambda column, values: logged.setdefault(column, values),
        answer=["4", "4", "4"],  # an extra dataset column, as TRL passes it
    )
    # The judge's query is the last user message, not the system prompt.
    criteria_prompt = backend.calls[0][0][0][0]["content"]
    assert "What is 2+2?" in criteria_prompt
    assert "Be brief." not in criteria_prompt
    assert rewards[0] is not None
    assert math.isclose(rewards[0], scripted_score(backend.calls[1][0][0][-1]["content"]) / 10)
    assert rewards[1] is None
    assert rewards[2] is None  # no boxed score; empty response
    assert logged["ce_rm/unscorable_fraction"] == pytest.approx(2 / 3)
    assert logged["ce_rm_reason"][0] == ""
    assert "empty" in logged["ce_rm_reason"][2]


def test_bad_prompt_does_not_lose_the_batch_and_query_fn() -> None:
    judge, _ = mock_judge()
    reward = CermRewardFunc(judge)
    rewards = reward(prompts=[[{"role": "system", "content": "only system"}], "Q"], completions=["x", "y"])
    assert rewards[0] is None
    assert rewards[1] is not None
    custom = CermRewardFunc(judge, query_fn=lambda p: "fixed query")
    assert custom(prompts=["anything"], completions=["y"]) == [rewards[1]]
    with pytest.raises(TypeError):
        CermRewardFunc("not a judge")  # type: ignore[arg-type]


def test_async_variant_matches_sync() -> None:
    judge, _ = mock_judge()
    prompts, completions = ["Q1", "Q1", "Q2"], ["a", "bb", "c"]
    sync = CermRewardFunc(judge)(prompts=prompts, completions=completions)
    areward = AsyncCermRewardFunc(judge)
    assert asyncio.iscoroutinefunction(areward.__call__)
    assert asyncio.run(areward(prompts=prompts, completions=completions)) == sync


def test_errored_completions_are_none_and_counted_apart_from_unscorable(caplog: pytest.LogCaptureFixture) -> None:
    judge, _ = failing_judge("boom")
    logged: dict[str, Any] = {}
    reward = CermRewardFunc(judge)
    with caplog.at_level(logging.WARNING, logger="cerm"):
        rewards = reward(
            prompts=["Q"] * 4,
            completions=["fine", "boom", "UNSCORABLE", "also fine"],
            log_metric=lambda name, value: logged.setdefault(name, value),
            log_extra=lambda column, values: logged.setdefault(column, values),
        )
    assert rewards[0] is not None
    assert rewards[3] is not None
    assert rewards[1] is None  # no judgment: no reward
    assert rewards[2] is None  # the judge's verdict: unscorable
    assert [j.status for j in reward.last_judgments if j] == [
        Status.SCORED,
        Status.ERROR,
        Status.UNSCORABLE,
        Status.SCORED,
    ]
    assert logged["cerm/error_fraction"] == pytest.approx(1 / 4)
    assert logged["cerm/unscorable_fraction"] == pytest.approx(1 / 4)  # the failure is not counted as unscorable
    assert "unreachable" in logged["cerm_reason"][1]
    assert any("no judgment" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_outage_of_an_openai_compatible_judge_is_an_error_metric() -> None:
    """Fault injection over real HTTP: every attempt for one completion fails at the judge's server."""
    from cerm.backends.openai import OpenAIBackend

    fault = FaultServer(schedule={"flaky": ["503", "503"]})
    with fault.running():
        backend = OpenAIBackend(
            "judge-model", base_url=fault.base_url, api_key="sk-test", max_attempts=2, backoff_initial=0.01, timeout=5
        )
        judge = Judge(backend, config=JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32))
        logged: dict[str, Any] = {}
        reward = AsyncCermRewardFunc(judge)
        rewards = asyncio.run(
            reward(
                prompts=["Q", "Q"],
                completions=["score=6 ok", "score=6 flaky"],
                log_metric=lambda name, value: logged.setdefault(name, value),
            )
        )
        backend.close()
    assert rewards == [6.0, None]
    assert logged == {"cerm/unscorable_fraction": 0.0, "cerm/error_fraction": 0.5}
    assert fault.count("flaky") == 2


def _grpo(reward: Any, tmp_path: Any, *, generations: int, steps: int = 2) -> tuple[Any, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    policy, tokenizer = tiny_policy()
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    dataset = Dataset.from_list(
        [{"prompt": _chat("What is the capital of France?")}, {"prompt": _chat("Name a primary colour.")}]
    )
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=generations,
        num_generations=generations,
        max_completion_length=6,
        max_steps=steps,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=policy, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    changed = any(not p.detach().equal(before[n]) for n, p in policy.named_parameters())
    return trainer, changed


class _Spy:
    """Records what TRL passes to the wrapped reward function."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []
        self.__name__ = inner.__name__

    def __call__(self, prompts: Any, completions: Any, **kwargs: Any) -> Any:
        rewards = self.inner(prompts=prompts, completions=completions, **kwargs)
        self.calls.append((list(prompts), list(completions), dict(kwargs), list(rewards)))
        return rewards


@pytest.mark.model
def test_grpo_trainer_steps_with_the_demo_judge(tmp_path: Any) -> None:
    """TRL's GRPOTrainer runs two optimisation steps with the real embedded judge as its reward function."""
    judge = Judge("demo-base", config=JudgeConfig(criteria_max_new_tokens=8, evaluation_max_new_tokens=8))
    spy = _Spy(CermRewardFunc(judge, scale=(0, 1)))
    trainer, _ = _grpo(spy, tmp_path, generations=2)
    assert trainer.state.global_step == 2
    assert len(spy.calls) == 2
    for prompts, completions, kwargs, rewards in spy.calls:
        assert len(prompts) == len(completions) == len(rewards) == 2  # one group of num_generations completions
        assert prompts[0] == prompts[1]
        assert prompts[0][-1]["role"] == "user"
        assert all(isinstance(c, list) and c[0]["role"] == "assistant" for c in completions)
        assert {"completion_ids", "trainer_state", "log_metric", "log_extra"} <= set(kwargs)
        assert len(kwargs["completion_ids"]) == 2
        # A real judgment for every completion: a score in [0, 1] or None with a reason (the tiny judge is weak).
        judgments = spy.inner.last_judgments
        assert all(j is not None and (j.score is not None or j.reason) for j in judgments)
        assert all(r is None or 0 <= r <= 1 for r in rewards)
    logged = [h for h in trainer.state.log_history if "cerm/unscorable_fraction" in h]
    assert len(logged) == 2
    judge.close()


@pytest.mark.model
def test_grpo_rewards_move_the_policy_async(tmp_path: Any) -> None:
    """With a judge whose scores vary (scripted backend), the async reward drives real gradient updates in TRL."""
    judge, backend = mock_judge()
    reward = AsyncCermRewardFunc(judge, scale=(0, 1))
    trainer, changed = _grpo(reward, tmp_path, generations=4)
    assert trainer.state.global_step == 2
    assert changed, "the policy's weights did not change: rewards did not reach the loss"
    means = [h["rewards/cerm/mean"] for h in trainer.state.log_history if "rewards/cerm/mean" in h]
    assert len(means) == 2
    assert all(m is not None and 0 <= m <= 1 for m in means)
    assert len(backend.calls) == 4  # per step: one criteria call, one evaluation call
