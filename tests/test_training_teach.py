"""Teacher rejection sampling: a Judge teacher on a scripted backend with known acceptance, and on the real demo model
with tiny budgets (its drafts are rejected; the counts it reports must match what it wrote)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from _support import scripted
from cerm import Judge, JudgeConfig
from cerm.backends import Backend, Completion, MockBackend
from cerm.training import (
    JudgeTeacher,
    PreferencePair,
    TeachConfig,
    Teacher,
    TeacherDraft,
    check_draft,
    checkable_pairs,
    read_manifest,
    read_trajectories,
    teach,
)


def _pair(pair_id: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(id=pair_id, prompt=f"Question {pair_id}?", chosen=chosen, rejected=rejected, source="t")


def _scripted_backend() -> MockBackend:
    calls: Counter[str] = Counter()

    def score_of(query: str, response: str, sample: int) -> str | Completion:
        calls[response] += 1
        if response == "flaky good":  # wrong on the first attempt's two chains, right afterwards
            return "3" if calls[response] <= 2 else "9"
        if response == "nobox":
            return Completion(text="It looks fine to me.", finish_reason="stop")
        if response == "cut":
            return Completion(text="1. Correctness: fine $\\boxed{4}$", finish_reason="length")
        if response == "fail":
            return Completion.failed("server outage")
        match = re.match(r"score=(\S+)", response)
        assert match, response
        return match.group(1)

    return MockBackend(scripted(score_of))


PAIRS = [
    _pair("good1", "score=8 a", "score=3 b"),
    _pair("good2", "score=9 a", "score=2.5 b"),
    _pair("tie", "score=5 a", "score=5 b"),
    _pair("wrong", "score=2 a", "score=7 b"),
    _pair("flaky", "flaky good", "score=5 x"),
    _pair("nobox", "nobox", "score=1 x"),
    _pair("cut", "score=8 y", "cut"),
    _pair("fail", "fail", "score=1 z"),
]


def test_judge_teacher_rejection_sampling_with_known_acceptance(tmp_path: Path) -> None:
    backend = _scripted_backend()
    judge = Judge(backend, config=JudgeConfig(k=2, temperature=0.7))
    teacher = JudgeTeacher(judge, base_seed=100, batch_size=3)
    assert isinstance(teacher, Teacher)
    out = tmp_path / "teach"
    config = TeachConfig(output_dir=str(out), checkable=1, teacher="judge", judge_model="unused", samples=2, attempts=2)
    teach(config, teacher=teacher, pairs=PAIRS)

    # Hand count. k = 2 chains per attempt, 2 attempts for every pair without an accepted draft:
    #   good1, good2: attempt 0 gives 2 accepted drafts each (1 kept)                  -> 4 drafts, 4 accepted
    #   tie / wrong: 4 drafts each, all rejected (tie / wrong_order)                  -> 8 drafts
    #   flaky: attempt 0 wrong_order x2, attempt 1 accepted x2 (1 kept)                -> 4 drafts, 2 accepted
    #   nobox: no boxed score x4; cut: cut off at the budget x4: the Judge scored neither (unscorable) -> 8 drafts
    #   fail: the chosen evaluation's generation failed: 4 errors, not drafts
    stats = read_manifest(out)["stats"]
    assert stats["drafts"] == 4 + 8 + 4 + 8
    assert stats["drafts_accepted"] == 6
    assert stats["drafts_kept"] == 3
    assert stats["drafts_errored"] == 4
    assert stats["acceptance_rate"] == pytest.approx(6 / 24)
    assert stats["pairs_accepted"] == 3
    assert stats["pair_acceptance_rate"] == pytest.approx(3 / 8)
    assert stats["rejections"] == {"tie": 4, "unscorable": 8, "wrong_order": 6}
    assert stats["teacher"] == "judge:mock-judge"

    trajectories = read_trajectories(out)
    assert stats["trajectories"] == len(trajectories) == 6
    assert sorted({t.pair_id for t in trajectories}) == ["flaky", "good1", "good2"]
    flaky = {t.role: t for t in trajectories if t.pair_id == "flaky"}
    assert (flaky["chosen"].score, flaky["rejected"].score) == (9.0, 5.0)
    assert flaky["chosen"].criteria == flaky["rejected"].criteria
    assert "[Start of Criteria]" in flaky["chosen"].criteria
    assert flaky["chosen"].evaluation.endswith("$\\boxed{9}$")

    log = {r["pair_id"]: r for r in map(json.loads, (out / "teach_log.jsonl").read_text().splitlines())}
    assert log["flaky"] == {
        "pair_id": "flaky", "drafts": 4, "accepted": 2, "kept": 1, "errors": 0,
        "rejected": {"wrong_order": 2}, "unsupported": False,
    }  # fmt: skip
    assert log["fail"]["errors"] == 4
    assert log["fail"]["drafts"] == 0

    # Each attempt samples with its own seed (criteria turns: salt 0), and only pending pairs are judged again.
    criteria_calls = [(convs, params) for convs, params in backend.calls if len(convs[0]) == 1]
    assert sorted({params.seed for _, params in criteria_calls}) == [100, 101]
    second_attempt = [c for convs, params in criteria_calls if params.seed == 101 for c in convs]
    assert len(second_attempt) == 6  # tie, wrong, flaky, nobox, cut, fail


def test_check_draft_reasons() -> None:
    criteria = "Analysis.\n[Start of Criteria]\n1. Correctness: right\n[End of Criteria]"
    good = "1. Correctness: ok $\\boxed{5}$\nOverall $\\boxed{9}$"
    bad = "1. Correctness: no $\\boxed{1}$\nOverall $\\boxed{2}$"
    assert check_draft(TeacherDraft(criteria, good, bad)).accepted
    assert check_draft(TeacherDraft(criteria, bad, good)).reason == "wrong_order"
    assert check_draft(TeacherDraft(criteria, good, good)).reason == "tie"
    assert check_draft(TeacherDraft("no markers", good, bad)).reason == "criteria_format"
    assert check_draft(TeacherDraft(criteria, "no box", bad)).reason == "evaluation_format"
    two_boxes = "1. Correctness: ok $\\boxed{5}$ and $\\boxed{4}$\nOverall $\\boxed{9}$"  # 2 scores, 1 criterion
    assert check_draft(TeacherDraft(criteria, two_boxes, bad)).reason == "evaluation_warnings"
    assert check_draft(TeacherDraft(criteria, two_boxes, bad), strict_format=False).accepted
    assert check_draft(TeacherDraft(criteria, good, bad, problem="cut off")).reason == "unscorable"
    assert check_draft(TeacherDraft("", "", "", error="outage")).reason == "error"


@pytest.mark.model
def test_judge_teacher_on_the_demo_model_reports_what_it_wrote(demo_backend: Backend, tmp_path: Path) -> None:
    judge = Judge(demo_backend, config=JudgeConfig(criteria_max_new_tokens=16, evaluation_max_new_tokens=12, k=2,
                                                   temperature=0.7))  # fmt: skip
    pairs = checkable_pairs(1, seed=0, split="heldout")
    out = tmp_path / "demo"
    config = TeachConfig(
        output_dir=str(out), checkable=1, teacher="judge", judge_model="demo-base", samples=2, attempts=1
    )
    teach(config, teacher=JudgeTeacher(judge), pairs=pairs)
    stats = read_manifest(out)["stats"]
    trajectories = read_trajectories(out)
    log = [json.loads(line) for line in (out / "teach_log.jsonl").read_text().splitlines()]
    # One pair, two chains, one attempt: every chain is a draft or an error.
    assert stats["drafts"] + stats["drafts_errored"] == 2
    assert stats["drafts"] == sum(r["drafts"] for r in log)
    assert sum(stats["rejections"].values()) == stats["drafts"] - stats["drafts_accepted"]
    assert stats["trajectories"] == len(trajectories) == 2 * stats["drafts_kept"]
    # The untrained demo model never closes the format at these budgets: all its drafts are rejected.
    assert stats["drafts_accepted"] == 0
    assert set(stats["rejections"]) <= {"criteria_format", "evaluation_format", "unscorable"}


def test_teach_reads_a_stage_directory_plus_generated_pairs(tmp_path: Path) -> None:
    from cerm.training import teach_pairs, write_pairs

    write_pairs([_pair("p1", "A good answer.", "A bad answer.")], tmp_path / "curated" / "pairs.jsonl")
    config = TeachConfig(output_dir=str(tmp_path / "t"), data=str(tmp_path / "curated"), checkable=2, open_ended=1)
    pairs = teach_pairs(config)
    assert [p.source for p in pairs] == ["t", "cerm-checkable", "cerm-checkable", "cerm-open"]
    teach(config)
    stats = read_manifest(tmp_path / "t")["stats"]
    assert (stats["pairs"], stats["pairs_unsupported"], stats["trajectories"]) == (4, 1, 6)
