"""The RL frameworks' OWN reward code against cerm, at pinned releases (the `.venv-rl` tier: `make test-rl`).

* OpenRLHF 0.11.2: ``SingleTurnAgentExecutor.execute`` (its rollout step: prompt truncation, decoding with special
  tokens, the aiohttp remote-reward client with its retries) against a running ``cerm serve`` app.
* veRL 0.9.1: ``RewardLoopWorker`` with veRL's generated trainer config, loading ``examples/verl_reward.py`` by veRL's
  own loader (``reward.custom_reward_function.path/name``), its ``naive`` reward manager on a real ``DataProto``; also
  with veRL's reward model router address, and with ``reward_kwargs``.
* TRL 1.16.0: ``GRPOTrainer`` for two steps with :class:`cerm.integrations.CermRewardFunc`.

What is stubbed: the policy's generation engine only (OpenRLHF's vLLM engine answers scripted token ids; veRL's
rollout is replaced by a DataProto built from scripted responses). The judge is a real HTTP server speaking the
OpenAI chat-completions API whose score for a response is a hash of the response text as it reached the judge, so
every reward is checked against its known value.

These frameworks are not in the main venv: `make venv-rl` installs them with --no-deps plus only what their reward
paths import. Outside that venv the tests skip with that reason; with CERM_REQUIRE_RL=1 (set by `make test-rl`) a
missing framework fails instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.metadata
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest

from _openai_servers import FaultServer
from cerm import Judge, JudgeConfig
from cerm._embedded import demo_model_path
from cerm.integrations import CermRewardFunc, RewardServer, create_app

ROOT = Path(__file__).resolve().parents[1]
PINNED = {"openrlhf": "0.11.2", "verl": "0.9.1", "trl": "1.16.0"}
UNSCORABLE_TAG = "[no score]"  # a query containing it gets a judgment without a score
_RESPONSE = re.compile(r"\[Start of Response\]\n(.*)\n\[End of Response\]", re.S)
CRITERIA = "Analysis.\n[Start of Criteria]\n1. Accuracy: the answer is right.\n[End of Criteria]"


def framework(name: str) -> ModuleType:
    """The framework at its pinned version; skip (or fail under CERM_REQUIRE_RL=1) when it is not installed."""
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if os.environ.get("CERM_REQUIRE_RL") == "1":
            raise
        pytest.skip(f"{name} is not installed here ({exc}); `make test-rl` runs this in .venv-rl")
    version = importlib.metadata.version(name)
    assert version == PINNED[name], f"{name} {version} installed, these tests pin {PINNED[name]}"
    return module


def hashed_score(response: str) -> int:
    return hashlib.sha256(response.encode()).digest()[0] % 11


class HashJudgeServer(FaultServer):
    """An OpenAI-compatible judge: criteria text for a criteria turn; for an evaluation turn, the score
    ``hashed_score(response)`` of the response between the CE-RM prompt's markers (no score when the query holds
    UNSCORABLE_TAG). ``judged`` records (query turn, response) of every evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.judged: list[tuple[str, str]] = []

    @property
    def criteria_turns(self) -> int:
        return sum(1 for seen in self.seen if len(seen.body["messages"]) == 1)

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        if len(messages) == 1:
            text = CRITERIA
        else:
            match = _RESPONSE.search(messages[-1]["content"])
            assert match is not None
            response = match.group(1)
            self.judged.append((messages[0]["content"], response))
            text = (
                "I cannot tell."
                if UNSCORABLE_TAG in messages[0]["content"]
                else f"1. Accuracy: fine. $\\boxed{{3}}$\nOverall: $\\boxed{{{hashed_score(response)}}}$"
            )
        return {
            "id": "cmpl-hash",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "x"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }


@pytest.fixture
def judge_server() -> Iterator[HashJudgeServer]:
    with HashJudgeServer().running() as server:
        yield server


def http_judge(server: HashJudgeServer) -> Judge:
    return Judge(
        "hash-judge",
        backend="openai",
        base_url=server.base_url,
        max_attempts=1,
        config=JudgeConfig(criteria_max_new_tokens=64, evaluation_max_new_tokens=64),
    )


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_model_path()))


# A system prompt, an earlier exchange, then the question the judge must see.
DIALOGUE = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there."},
    {"role": "assistant", "content": "Hello."},
]


def questions(n: int) -> list[str]:
    return [f"Question {i}: what is {i} plus {i}?" for i in range(n)]


# -- OpenRLHF ---------------------------------------------------------------------------------------------------------
class ScriptedEngine:
    """OpenRLHF's vLLM engine, stubbed: ``generate`` answers the token ids of the next scripted response."""

    def __init__(self, tok: Any, responses: dict[str, str]) -> None:
        self.tok = tok
        self.responses = responses  # a substring of the (possibly truncated) prompt -> the response text
        self.prompts: list[str] = []

    async def generate(self, prompt_token_ids: list[int], params: Any, multi_modal_data: Any = None) -> Any:
        prompt = self.tok.decode(prompt_token_ids)
        self.prompts.append(prompt)
        text = next(r for key, r in self.responses.items() if key in prompt)
        ids = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.convert_tokens_to_ids("<|im_end|>")]
        output = SimpleNamespace(token_ids=ids, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


def test_openrlhf_rollout_client_against_cerm_serve(judge_server: HashJudgeServer) -> None:
    framework("openrlhf")
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    tok = tokenizer()
    qs = questions(4)
    cases = {  # question -> the response the policy writes
        qs[0]: "Zero.",
        qs[1]: "Two <|im_start|> tokens <|endoftext|> inside.",  # special tokens inside the response
        qs[2]: "Four, said at length" + " and again" * 3 + ".",
        qs[3]: "Six.",
    }
    prompts = {
        q: tok.apply_chat_template(
            [*DIALOGUE, {"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in qs
    }
    prompts[qs[3]] = prompts[qs[3]].replace(qs[3], qs[3] + " " + UNSCORABLE_TAG)  # an unscorable sample
    engine = ScriptedEngine(tok, {q.split(":")[0]: r for q, r in cases.items()})
    judge = http_judge(judge_server)
    app = create_app(judge, unscorable_reward=-1.0, scale=(0, 1), max_wait_ms=5)
    with RewardServer(app) as server:
        executor = SingleTurnAgentExecutor(remote_rm_url=server.url + "/get_reward")
        params = SimpleNamespace(max_tokens=32, logprobs=None)

        async def rollout(prompt: str, max_length: int) -> dict[str, Any]:
            return await executor.execute(prompt, "label", params, max_length, tok, engine)  # type: ignore[no-any-return]

        outputs = asyncio.run(
            _gather([rollout(prompts[q], 4096) for q in qs] + [rollout(prompts[qs[2]], 32 + 20)])  # last: truncated
        )
    # The truncated rollout: the policy saw only the prompt's last 20 tokens; the judge read the full question.
    assert prompts[qs[2]].endswith(engine.prompts[-1])
    assert len(engine.prompts[-1]) < len(prompts[qs[2]])
    expected = [hashed_score(cases[q]) / 10 for q in qs[:3]] + [-1.0, hashed_score(cases[qs[2]]) / 10]
    assert [o["reward"] for o in outputs] == [[e] for e in expected]
    assert [o["extra_logs"]["cerm_scorable"] for o in outputs] == [[1.0], [1.0], [1.0], [0.0], [1.0]]
    assert [o["extra_logs"]["cerm_prompt_truncated"] for o in outputs] == [[0.0]] * 4 + [[1.0]]
    for query_turn, _ in judge_server.judged:
        assert "You are terse." not in query_turn
        assert "Hi there." not in query_turn
    # What the judge read: each response as written, special tokens included (a duplicate may be judged once).
    assert {r for _, r in judge_server.judged} == set(cases.values())
    assert judge_server.criteria_turns == 4  # the truncated sample of qs[2] reused its prompt's criteria


async def _gather(coroutines: list[Any]) -> list[Any]:
    return list(await asyncio.gather(*coroutines))


def test_openrlhf_staggered_samples_share_one_criteria_turn_per_prompt(judge_server: HashJudgeServer) -> None:
    framework("openrlhf")
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    tok = tokenizer()
    qs = questions(4)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in qs
    ]
    app = create_app(http_judge(judge_server), unscorable_reward=-1.0, max_wait_ms=0)
    rewards: list[list[float]] = []
    with RewardServer(app) as server:
        executor = SingleTurnAgentExecutor(remote_rm_url=server.url + "/get_reward")
        params = SimpleNamespace(max_tokens=16, logprobs=None)
        for wave in range(4):  # sample `wave` of every prompt, one wave after the other
            engine = ScriptedEngine(tok, {q.split(":")[0]: f"Answer {wave} to {q[:10]}" for q in qs})
            outs = asyncio.run(_gather([executor.execute(p, "", params, 4096, tok, engine) for p in prompts]))
            rewards.append([o["reward"][0] for o in outs])
    assert judge_server.criteria_turns == 4
    for wave, row in enumerate(rewards):
        assert row == [float(hashed_score(f"Answer {wave} to {q[:10]}")) for q in qs]


def test_openrlhf_retries_a_503_then_leaves_the_sample_without_a_reward(judge_server: HashJudgeServer) -> None:
    """What OpenRLHF 0.11.2 does with cerm serve's 503 (an ERROR judgment: no judgment): its client retries the request
    5 times, then its rollout step logs the failure and returns the sample with reward None (never a number)."""
    framework("openrlhf")
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    tok = tokenizer()
    judge_server.schedule = {"boom": ["503"] * 100}  # every judge turn of this sample (query and response) fails
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Say boom."}], tokenize=False, add_generation_prompt=True
    )
    engine = ScriptedEngine(tok, {"Say boom": "boom"})
    with RewardServer(create_app(http_judge(judge_server), unscorable_reward=-1.0, max_wait_ms=0)) as server:
        executor = SingleTurnAgentExecutor(remote_rm_url=server.url + "/get_reward")
        params = SimpleNamespace(max_tokens=16, logprobs=None)
        output = asyncio.run(executor.execute(prompt, "", params, 4096, tok, engine))
        health = httpx.get(server.url + "/health").json()
    assert output["reward"] is None
    assert output["scores"] is None
    assert health["requests"] == 5  # OpenRLHF's client: 5 attempts, each answered 503
    assert health["errored_items"] == 5


# -- veRL -------------------------------------------------------------------------------------------------------------
def verl_config(**reward_kwargs: Any) -> Any:
    verl = framework("verl")
    from omegaconf import OmegaConf, open_dict

    config = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml")
    with open_dict(config):
        config.actor_rollout_ref.model.path = str(demo_model_path())
        config.reward.custom_reward_function.path = str(ROOT / "examples/verl_reward.py")
        config.reward.custom_reward_function.name = "compute_score"
        config.reward.custom_reward_function.reward_kwargs = reward_kwargs
    assert config.reward.reward_manager.name == "naive"  # veRL 0.9's default manager: one response per call
    return config


def verl_batch(tok: Any, rows: list[tuple[str, str]]) -> Any:
    """A DataProto shaped like veRL's rollout output: left-padded prompts, right-padded responses."""
    import numpy as np
    import torch
    from verl import DataProto

    prompt_len, response_len = 64, 48
    prompts, responses, masks = [], [], []
    for question, response in rows:
        p = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
        p = list(p["input_ids"] if isinstance(p, dict) or hasattr(p, "keys") else p)[-prompt_len:]
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert len(r) <= response_len
        pad = tok.pad_token_id
        prompts.append([pad] * (prompt_len - len(p)) + p)
        responses.append(r + [pad] * (response_len - len(r)))
        masks.append([0] * (prompt_len - len(p)) + [1] * (len(p) + len(r)) + [0] * (response_len - len(r)))
    tensors = {
        "prompts": torch.tensor(prompts),
        "responses": torch.tensor(responses),
        "attention_mask": torch.tensor(masks),
    }
    non_tensors = {
        "data_source": np.array(["cerm-test"] * len(rows), dtype=object),
        "reward_model": np.array([{"ground_truth": ""} for _ in rows], dtype=object),
        "extra_info": np.array([{"question": q} for q, _ in rows], dtype=object),
        "raw_prompt": np.array([[{"role": "user", "content": q}] for q, _ in rows], dtype=object),
    }
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


def run_verl(config: Any, data: Any, router: str | None = None) -> list[dict[str, Any]]:
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    worker = RewardLoopWorker(config, reward_router_address=router)
    return list(worker.loop.run_until_complete(worker.compute_score_batch(data)))


def verl_rows() -> list[tuple[str, str]]:
    qs = questions(3)
    return [
        (qs[0], "Zero."),
        (qs[0], "Nought, I think."),
        (qs[1], "Two <|im_start|> with a special token."),  # veRL decodes with skip_special_tokens=True
        (qs[2] + " " + UNSCORABLE_TAG, "Four."),
    ]


def expected_verl(rows: list[tuple[str, str]]) -> list[float]:
    return [0.0 if UNSCORABLE_TAG in q else hashed_score(r.replace("<|im_start|>", "")) / 10 for q, r in rows]


def test_verl_reward_loop_with_reward_kwargs_and_a_shared_criteria_cache(
    judge_server: HashJudgeServer, tmp_path: Path
) -> None:
    tok = tokenizer()
    rows = verl_rows()
    cache = tmp_path / "criteria.sqlite"
    config = verl_config(judge_model="hash-judge", judge_base_url=judge_server.base_url, criteria_cache=str(cache))
    # Step 1: every response at once (veRL scores them concurrently, one call each): one criteria turn per prompt.
    first = run_verl(config, verl_batch(tok, rows))
    assert judge_server.criteria_turns == 3
    # Step 2: a second worker (veRL loads the example file again: a new judge, the same cache file), new responses.
    more = [(rows[0][0], "Zero again."), (rows[2][0], "Two.")]
    second = run_verl(config, verl_batch(tok, more))
    outputs = first + second
    assert [o["reward_score"] for o in outputs] == expected_verl(rows + more)
    assert [o["reward_extra_info"]["scorable"] for o in outputs] == [True, True, True, False, True, True]
    assert judge_server.criteria_turns == 3  # one per prompt across both workers
    # veRL decoded the response with skip_special_tokens=True: the judge read it without the special token.
    assert "Two  with a special token." in {r for _, r in judge_server.judged}


def test_verl_reward_loop_uses_verls_reward_model_router(judge_server: HashJudgeServer) -> None:
    tok = tokenizer()
    config = verl_config()
    from omegaconf import open_dict

    with open_dict(config):
        config.reward.reward_model.enable = True
        config.reward.reward_model.model_path = str(demo_model_path())
    rows = verl_rows()[:2]
    router = judge_server.base_url.removeprefix("http://").removesuffix("/v1")
    outputs = run_verl(config, verl_batch(tok, rows), router=router)
    assert [o["reward_score"] for o in outputs] == expected_verl(rows)
    assert {seen.body["model"] for seen in judge_server.seen} == {str(demo_model_path())}


# -- TRL --------------------------------------------------------------------------------------------------------------
class Recording(CermRewardFunc):
    """cerm's reward function, recording what TRL passed and what it answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[list[Any], list[Any], list[float | None]]] = []

    def __call__(self, prompts: Any, completions: Any, **kwargs: Any) -> list[float | None]:
        rewards = super().__call__(prompts, completions, **kwargs)
        self.calls.append((list(prompts), list(completions), rewards))
        return rewards


def length_reward(completions: Any, **kwargs: Any) -> list[float]:
    return [float(len(c[0]["content"])) for c in completions]


def test_trl_grpo_trainer_two_steps(
    judge_server: HashJudgeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    framework("trl")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from _integration_helpers import tiny_policy

    qs = questions(2)
    dataset = Dataset.from_list(
        [
            {"prompt": [*DIALOGUE, {"role": "user", "content": qs[0]}]},  # system prompt, earlier turns
            {"prompt": [{"role": "user", "content": qs[1] + " " + UNSCORABLE_TAG}]},  # every completion unscorable
        ]
    )
    reward = Recording(http_judge(judge_server), scale=(0, 1))
    policy, tok = tiny_policy()
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=6,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    assert args.multi_objective_aggregation == "sum_then_normalize"  # TRL's default, which the warning is about
    trainer = GRPOTrainer(
        model=policy, reward_funcs=[reward, length_reward], args=args, train_dataset=dataset, processing_class=tok
    )
    with caplog.at_level("WARNING", logger="cerm"):
        trainer.train()
    assert trainer.state.global_step == 2
    assert len(reward.calls) == 2
    checked = 0
    for prompts, completions, rewards in reward.calls:
        for prompt, completion, got in zip(prompts, completions, rewards, strict=True):
            question = prompt[-1]["content"]
            if UNSCORABLE_TAG in question:
                assert got is None
            else:
                assert got == hashed_score(completion[-1]["content"]) / 10
                checked += 1
    assert checked >= 4
    assert all("You are terse." not in q and "Hi there." not in q for q, _ in judge_server.judged)
    assert sum("normalize_then_sum" in r.getMessage() for r in caplog.records) == 1  # warned once


def test_verl_awaits_the_coroutine_form(judge_server: HashJudgeServer, tmp_path: Path) -> None:
    """`reward.custom_reward_function.name=compute_score_async`: veRL sees a coroutine function and awaits it."""
    tok = tokenizer()
    config = verl_config(
        judge_model="hash-judge", judge_base_url=judge_server.base_url, criteria_cache=str(tmp_path / "c.sqlite")
    )
    config.reward.custom_reward_function.name = "compute_score_async"
    from verl.trainer.ppo.reward import get_custom_reward_fn

    assert asyncio.iscoroutinefunction(get_custom_reward_fn(config))  # veRL's own check picks the awaited path
    rows = verl_rows()
    outputs = run_verl(config, verl_batch(tok, rows))
    assert [o["reward_score"] for o in outputs] == expected_verl(rows)
    assert judge_server.criteria_turns == 3
