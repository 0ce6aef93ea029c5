"""Preference pairs in: cerm's JSONL schemas, a datasets.Dataset, and the Skywork-Reward-Preference schema (through
datasets.load_dataset, on a local fixture laid out like the hub data set)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _support import REPO_ROOT
from cerm.training import PairError, PreferencePair, detect_schema, load_pairs, read_pairs, write_pairs

SKYWORK = REPO_ROOT / "tests" / "fixtures" / "skywork_preference"


def _cerm_rows() -> list[dict[str, object]]:
    return [
        {"id": "a", "source": "s1", "category": "math", "prompt": "2+2?", "chosen": "4", "rejected": ["5"],
         "subset": "easy", "meta": {"note": 1}},
        {"id": "b", "source": "s2", "category": "chat", "prompt": "User: hi\n\nAssistant: hello\n\nUser: bye",
         "chosen": "Goodbye!", "rejected": ["What?", "Hello."],
         "meta": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "bye"}]}},
    ]  # fmt: skip


def test_cerm_benchmark_schema_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _cerm_rows()))
    pairs = load_pairs(path)
    assert [p.id for p in pairs] == ["a", "b#0", "b#1"]
    assert pairs[0].meta == {"note": 1, "subset": "easy"}
    assert pairs[0].messages is None
    assert pairs[1].rejected == "What?"
    assert pairs[2].rejected == "Hello."
    assert pairs[1].messages is not None
    assert [m["content"] for m in pairs[1].messages] == ["hi", "hello", "bye"]
    assert "messages" not in pairs[1].meta
    assert load_pairs(path, limit=2) == pairs[:2]


def test_cerm_schema_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_cerm_rows()[0]) + "\n" + json.dumps({"id": "x", "prompt": "q", "chosen": ""}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: 'chosen' must be a non-empty string"):
        load_pairs(path)


def test_pair_files_round_trip_and_stage_directories(tmp_path: Path) -> None:
    pairs = [
        PreferencePair(id="1", prompt="q", chosen="good", rejected="bad", source="s", category="c", meta={"k": [1]}),
        PreferencePair(
            id="2", prompt="User: a\n\nAssistant: b\n\nUser: c", chosen="x", rejected="y",
            messages=({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "c"}),
        ),
    ]  # fmt: skip
    write_pairs(pairs, tmp_path / "stage" / "pairs.jsonl")
    assert read_pairs(tmp_path / "stage" / "pairs.jsonl") == pairs
    assert load_pairs(tmp_path / "stage") == pairs  # a stage output directory loads directly
    assert detect_schema(pairs[0].to_dict()) == "pairs"


def test_a_datasets_dataset_and_plain_rows() -> None:
    datasets = pytest.importorskip("datasets")
    rows = _cerm_rows()
    for row in rows:
        row["meta"] = {}  # Arrow needs one type per column; meta.messages is covered by the file test
    dataset = datasets.Dataset.from_list(rows)
    pairs = load_pairs(dataset)
    assert [p.id for p in pairs] == ["a", "b#0", "b#1"]
    assert load_pairs(rows) == pairs
    assert [p.id for p in load_pairs(dataset, limit=1)] == ["a"]


def test_skywork_schema_through_load_dataset() -> None:
    pytest.importorskip("datasets")
    pairs = load_pairs(str(SKYWORK))  # a folder laid out like the hub repository, read by datasets.load_dataset
    assert len(pairs) == 5
    first = pairs[0]
    assert first.prompt == "What is the boiling point of water at sea level in Celsius?"
    assert first.chosen == "Water boils at 100 degrees Celsius at sea level."
    assert first.rejected == "Water boils at 90 degrees Celsius at sea level."
    assert first.source == "magpie_ultra"
    assert first.messages == ({"role": "user", "content": first.prompt},)
    assert len({p.id for p in pairs}) == 5
    # Multi-turn: the turns are kept structured and rendered into the query text by the protocol's function.
    trip = pairs[2]
    assert trip.messages is not None
    assert [m["role"] for m in trip.messages] == ["user", "assistant", "user"]
    assert trip.prompt == (
        "User: Can you help me plan a trip?\n\n"
        "Assistant: Of course. Where would you like to go, and for how long?\n\n"
        "User: Lisbon, three days."
    )
    assert trip.chosen.startswith("Day 1:")
    assert trip.rejected.startswith("Paris")
    assert [p.source for p in load_pairs(str(SKYWORK), limit=2)] == ["magpie_ultra", "offsetbias"]


def test_skywork_rows_with_different_prompts_are_refused() -> None:
    row = {
        "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}],
        "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "y"}],
        "source": "s",
    }
    with pytest.raises(PairError, match="row 0: 'chosen' and 'rejected' do not share the same prompt turns"):
        load_pairs([row])
    row["rejected"] = [{"role": "user", "content": "a"}]
    with pytest.raises(PairError, match="assistant"):
        load_pairs([row])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="schema"):
        load_pairs([], schema="csv")  # type: ignore[arg-type]
    with pytest.raises(PairError, match="no rows"):
        load_pairs([])
    with pytest.raises(PairError, match="same text"):
        PreferencePair(id="1", prompt="q", chosen="a", rejected="a")


def test_pairs_with_identical_answers_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rows = [*_cerm_rows(), {"id": "same", "prompt": "q", "chosen": "x", "rejected": ["x", "y", " "]}]
    with caplog.at_level("WARNING", logger="cerm"):
        pairs = load_pairs(rows)
    assert [p.id for p in pairs] == ["a", "b#0", "b#1", "same#1"]
    assert "skipped 1 pairs with identical chosen and rejected texts (same#0)" in caplog.text
    assert "skipped 1 pairs with an empty answer (same#2)" in caplog.text
    sky = {
        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "same"}],
        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "same"}],
        "source": "s",
    }
    ok = {**sky, "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "other"}]}
    assert [p.rejected for p in load_pairs([sky, ok])] == ["other"]
