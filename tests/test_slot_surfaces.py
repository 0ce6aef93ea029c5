"""The slot judge through the surfaces written for every judge kind: TRL's reward function, veRL's reward, the
OpenRLHF reward server and ``cerm eval``, with no surface special-casing it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from cerm import ConfigurationError, MaskedSlotReader, SlotJudge, Status
from cerm._slot._explain import BackendExplainer
from cerm.backends import Completion, MockBackend, SamplingParams
from cerm.integrations import AsyncCermRewardFunc, CermRewardFunc, RewardServer, create_app
from cerm.integrations.verl import JudgeUnavailableError, VerlReward
from cerm.protocol import PLAIN_SLOT_TEMPLATE, Conversation, SlotTemplate

QUERY = "What is 17 + 25?"
CHATML = f"<|im_start|>user\n{QUERY}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def slot_judge(tiny_mlm: Path) -> SlotJudge:
    return SlotJudge(MaskedSlotReader(str(tiny_mlm), template=SlotTemplate(PLAIN_SLOT_TEMPLATE)))


def failing_explainer_judge(tiny_mlm: Path) -> SlotJudge:
    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        return Completion.failed("explainer down") if "boom" in conversation[-1]["content"] else "Fine."

    return SlotJudge(MaskedSlotReader(str(tiny_mlm)), BackendExplainer(MockBackend(respond)))


def test_trl_reward_function(slot_judge: SlotJudge, tiny_mlm: Path) -> None:
    expected = slot_judge.score(QUERY, ["42", "41"])
    reward = CermRewardFunc(slot_judge, scale=(0, 1), name="esfp")
    rewards = reward(prompts=[QUERY, QUERY, QUERY], completions=["42", "41", "  "])
    assert rewards[:2] == pytest.approx([s / 10 for s in expected if s is not None])
    assert rewards[2] is None  # an empty completion has no reward, never a number
    assert reward.last_judgments[0] is not None
    assert reward.last_judgments[0].slot is not None
    async_rewards = asyncio.run(AsyncCermRewardFunc(slot_judge)(prompts=[QUERY], completions=["42"]))
    assert async_rewards == pytest.approx(expected[:1])
    # A failed explanation is an ERROR: no reward, counted apart.
    metrics: dict[str, float] = {}
    failing = CermRewardFunc(failing_explainer_judge(tiny_mlm), name="esfp")
    out = failing(prompts=[QUERY, QUERY], completions=["42", "boom"], log_metric=metrics.__setitem__)
    assert out[0] is not None
    assert out[1] is None
    assert metrics["esfp/error_fraction"] == 0.5
    # An unbounded readout refuses a reward scale instead of producing rewards outside it.
    log_odds = SlotJudge(slot_judge.reader, readout="log_odds")
    with pytest.raises(ConfigurationError, match="scale"):
        CermRewardFunc(log_odds, scale=(0, 1))
    assert CermRewardFunc(log_odds)(prompts=[QUERY], completions=["42"])[0] is not None


def test_verl_reward(slot_judge: SlotJudge, tiny_mlm: Path) -> None:
    (expected,) = slot_judge.score(QUERY, ["42"])
    reward = VerlReward(slot_judge, unscorable_score=-1.0, scale=(0, 1))
    single = reward(data_source="x", solution_str="42", ground_truth=None, extra_info={"question": QUERY})
    assert isinstance(single, dict)
    assert single["scorable"] is True
    assert single["score"] == pytest.approx((expected or 0.0) / 10)
    assert reward(data_source="x", solution_str=" ", extra_info={"question": QUERY})["score"] == -1.0  # type: ignore[index]
    with pytest.raises(JudgeUnavailableError):
        VerlReward(failing_explainer_judge(tiny_mlm), unscorable_score=0.0).compute_score(
            solution_str="boom", extra_info={"question": QUERY}
        )


def test_reward_server(slot_judge: SlotJudge) -> None:
    expected = slot_judge.score(QUERY, ["42", "41"])
    app = create_app(slot_judge, unscorable_reward=-1.0, scale=(0, 1), max_wait_ms=50)
    with RewardServer(app) as server:
        health = httpx.get(server.url + "/health").json()
        assert health["kind"] == "esfp-slot"
        assert health["backend"] == "hf-masked-lm"
        body = {"query": [CHATML + r + "<|im_end|>" for r in ("42", "41", " ")], "prompts": [CHATML] * 3}
        data = httpx.post(server.url + "/get_reward", json=body).json()
    assert data["rewards"][:2] == pytest.approx([s / 10 for s in expected if s is not None])
    assert data["rewards"][2] == -1.0
    assert data["cerm"][2]["status"] == Status.UNSCORABLE.value


def test_cerm_eval_with_a_slot_judge(tiny_mlm: Path, tmp_path: Path) -> None:
    from cerm.cli import main

    data = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "a", "prompt": QUERY, "chosen": "42", "rejected": ["41"]},
        {"id": "b", "prompt": "Which is larger, 3 or 8?", "chosen": "8", "rejected": ["3", "   "]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    slot_yaml = tmp_path / "slot.yaml"
    slot_yaml.write_text(f"slot_model: {tiny_mlm}\nexplanation: none\n")
    out = tmp_path / "run"
    args = ["eval", "--data", str(data), "--out", str(out), "--slot-judge", str(slot_yaml), "--no-plots"]
    assert main([*args, "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", "b"]
    statuses = [c["status"] for c in records[1]["candidates"]]
    assert statuses == ["scored", "scored", "unscorable"]
    assert all(isinstance(c["score"], float) for c in records[0]["candidates"])
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["judge"]["backend"] == "hf-masked-lm"
    assert manifest["judge"]["config"]["readout"] == "probability"
    assert (out / "report.md").is_file()
    # A rerun resumes: the same judge settings compare equal.
    assert main([*args, "--no-progress"]) == 0
