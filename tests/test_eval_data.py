"""Loaders (shared benchmarks by name, own files, errors) and the runner's bookkeeping (resume, order, manifest).

The runner cases here use the scripted MockBackend for fault injection (a kill in the middle of a chunk, a torn last
line); the real-model proof, including a killed subprocess, is in test_eval_model.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from _support import SHARED_DATA as SHARED
from _support import needs_shared
from cerm import Judge
from cerm.backends import MockBackend, SamplingParams
from cerm.eval import (
    DataError,
    build_items,
    evaluate,
    load_items,
    load_rows,
    read_results,
    report_from_results,
    resolve_data,
)
from cerm.protocol import Conversation


@pytest.fixture(autouse=True)
def _shared_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # The shared copies are found by name only through $CERM_DATA_DIR: cerm itself never looks beside the repository.
    monkeypatch.setenv("CERM_DATA_DIR", str(SHARED))


def row(rid: str, prompt: str = "Say hi.", chosen: str = "Hi!", rejected: Any = ("Bye.",), **kw: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "source": "test",
        "category": kw.get("category", "cat"),
        "prompt": prompt,
        "chosen": chosen,
        "rejected": list(rejected),
        "subset": kw.get("subset", "sub"),
        "meta": kw.get("meta", {}),
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@needs_shared
@pytest.mark.parametrize(("name", "n_candidates"), [("llmbar", 2), ("judgebench", 2), ("rm_bench", 6), ("hh_rlhf", 2)])
def test_shared_benchmarks_by_name(name: str, n_candidates: int) -> None:
    assert resolve_data(name) == SHARED / name / "all.jsonl"
    items = load_items(name, limit=5, seed=3)
    assert len(items) == 5
    assert all(len(item.candidates) == n_candidates for item in items)
    assert load_items(name, limit=5, seed=3) == items  # the seeded slice is fixed
    assert [i.id for i in load_items(name, limit=5, seed=4)] != [i.id for i in items]


@needs_shared
def test_rm_bench_rows_group_into_style_items() -> None:
    rows = load_rows("rm_bench")
    items = build_items(rows)
    assert len(rows) == 3 * len(items)
    item = items[0]
    assert item.labels == ("chosen",) * 3 + ("rejected",) * 3
    assert item.styles == ("concise", "detailed_plain", "detailed_markdown") * 2
    first_rows = [r for r in rows if r.meta["item_id"] == item.id]
    by_style = {r.meta["style"]: r for r in first_rows}
    assert item.candidates[0] == by_style[0].chosen
    assert item.candidates[5] == by_style[2].rejected[0]


@needs_shared
def test_judgebench_keeps_response_model() -> None:
    items = load_items("judgebench", limit=20, seed=0)
    assert {i.meta["response_model"] for i in items} <= {"gpt-4o-2024-05-13", "claude-3-5-sonnet-20240620"}


def test_data_dir_env_and_own_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "llmbar").mkdir()
    write_jsonl(tmp_path / "llmbar" / "all.jsonl", [row("x1"), row("x2")])
    monkeypatch.setenv("CERM_DATA_DIR", str(tmp_path))
    assert [i.id for i in load_items("llmbar")] == ["x1", "x2"]
    own = write_jsonl(tmp_path / "mine.jsonl", [row("m1", rejected=["no", "nope", "never"])])
    items = load_items(str(own))
    assert items[0].candidates == ("Hi!", "no", "nope", "never")
    assert load_items(tmp_path / "llmbar")[0].id == "x1"  # a folder with all.jsonl
    assert load_items([row("d1")])[0].id == "d1"  # any iterable of dicts (a datasets.Dataset too)


def test_datasets_dataset_is_accepted(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([row("h1"), row("h2", rejected=["a", "b"])])
    assert [len(i.candidates) for i in load_items(ds)] == [2, 3]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"mine\.jsonl:2: malformed JSON"),
        (json.dumps({**row("b"), "chosen": ""}), r"mine\.jsonl:2: 'chosen' must be a non-empty string"),
        (json.dumps({**row("b"), "rejected": []}), r"mine\.jsonl:2: 'rejected' must be a non-empty list"),
        (json.dumps(row("a")), r"duplicate id 'a'"),
        ("[1, 2]", r"mine\.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(row("a")) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_rows(str(path))


def test_unknown_name_lists_known_benchmarks() -> None:
    with pytest.raises(DataError, match=r"not a benchmark folder: hh_rlhf, judgebench, llmbar, rm_bench"):
        load_rows("mt_bench")


def test_a_name_without_cerm_data_dir_points_to_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    # A user who ran pip install has no ../shared: the error says how to get the data, and nothing looks beside cerm.
    monkeypatch.delenv("CERM_DATA_DIR")
    with pytest.raises(DataError, match=r"set CERM_DATA_DIR .*--benchmark NAME"):
        load_rows("llmbar")


def test_limit_without_seed_takes_the_first_items() -> None:
    rows = [row(f"r{i}") for i in range(10)]
    assert [i.id for i in load_items(rows, limit=3)] == ["r0", "r1", "r2"]
    with pytest.raises(ValueError, match="limit"):
        load_items(rows, limit=0)


# -- runner bookkeeping with a scripted judge ---------------------------------------------------------------------
def scripted(conversation: Conversation, params: SamplingParams, sample: int) -> str:
    if len(conversation) == 1:
        return "[Start of Criteria]\n1. Accuracy: is it right\n[End of Criteria]"
    response = re.search(r"\[Start of Response\]\n(.*?)\n\[End of Response\]", conversation[-1]["content"], re.S)
    text = response.group(1) if response else ""
    if "broken" in text:
        return "I cannot decide."  # no boxed score: UNSCORABLE
    return f"Overall: $\\boxed{{{len(text) % 11}}}$"


ROWS = [
    row("p0", "Q0?", chosen="a good long answer", rejected=["bad"], category="x"),
    row("p1", "Q1?", chosen="ok", rejected=["a wrong answer"], category="x"),
    row("p2", "Q2?", chosen="same", rejected=["same"], category="y"),
    row("p3", "Q3?", chosen="broken", rejected=["fine"], category="y"),
    row("p4", "Q4?", chosen="c" * 9, rejected=["r" * 3, "rr", "r" * 8], category="z"),
]


def mock_judge() -> tuple[Judge, MockBackend]:
    backend = MockBackend(scripted)
    return Judge(backend), backend


def test_runner_writes_records_report_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    judge, _ = mock_judge()
    run = evaluate(judge, load_items(ROWS), tmp_path / "out", batch_size=2, progress=False, data_name="rows")
    assert [r["id"] for r in run.records] == ["p0", "p1", "p2", "p3", "p4"]
    scores = {r["id"]: [c["score"] for c in r["candidates"]] for r in run.records}
    assert scores["p0"] == [18 % 11, 3]
    assert scores["p3"] == [None, 4]
    assert run.records[3]["candidates"][0]["status"] == "unscorable"
    stats = run.metrics["pairwise"]
    # pairs: p0 win (7>3), p1 loss (2<3), p2 tie, p3 unscorable, p4: 9 vs 3, 2, 8 -> win, win, win
    assert (stats.wins, stats.losses, stats.ties, stats.unscorable) == (4, 1, 1, 1)
    # Default policies: a tie earns half, a pair without a verdict earns nothing (a failure is never credit).
    assert stats.accuracy == pytest.approx((4 + 0.5) / 7)
    assert stats.coverage == pytest.approx(6 / 7)
    report = run.report.read_text(encoding="utf-8")
    assert "| pairwise accuracy (ties: half, unscorable: wrong) | 64.3% |" in report
    assert "| coverage (pairs with both sides scored) | 85.7% |" in report
    assert "| 4 | 1 | 1 | 100.0% | 25.0% | 0 | 100.0% |" in report  # p4 is a best-of-4 set the judge got right
    assert {p.name for p in run.plots} == {"per_category_accuracy.png", "best_of_n_curve.png", "score_histogram.png"}
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in run.plots)
    again, _, _ = report_from_results(
        tmp_path / "out", tie_policy="excluded", unscorable_policy="excluded", plots=False
    )
    assert again["pairwise"].accuracy == pytest.approx(4 / 5)


def test_resume_after_a_torn_chunk_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    items = load_items(ROWS)
    judge, _ = mock_judge()
    whole = evaluate(judge, items, tmp_path / "whole", batch_size=2, progress=False, plots=False)
    reference = (tmp_path / "whole" / "results.jsonl").read_text(encoding="utf-8")

    # An interrupted run: chunk 1 complete, then p2 written (chunk 2 half done), then a torn line.
    broken = tmp_path / "broken"
    broken.mkdir()
    judge2, backend2 = mock_judge()
    lines = reference.splitlines(keepends=True)
    (broken / "results.jsonl").write_text(lines[0] + lines[1] + lines[2] + lines[3][:25], encoding="utf-8")
    resumed = evaluate(judge2, items, broken, batch_size=2, progress=False, plots=False)
    assert resumed.resumed_items == 3
    assert resumed.judged_items == 2  # p3 and p4
    assert (broken / "results.jsonl").read_text(encoding="utf-8") == reference
    assert resumed.report.read_text(encoding="utf-8") == whole.report.read_text(encoding="utf-8")
    # The half-done chunk (p2, p3) was judged whole again, then p4; the complete chunk (p0, p1) was not.
    criteria_calls = [[conv[0]["content"] for conv in call[0]] for call in backend2.calls if len(call[0][0]) == 1]
    assert [len(c) for c in criteria_calls] == [2, 1]
    assert "Q2?" in criteria_calls[0][0]
    assert "Q3?" in criteria_calls[0][1]
    assert "Q4?" in criteria_calls[1][0]


def test_rerun_of_a_finished_run_judges_nothing(tmp_path: Path) -> None:
    items = load_items(ROWS)
    judge, backend = mock_judge()
    evaluate(judge, items, tmp_path, batch_size=2, progress=False, plots=False)
    calls = len(backend.calls)
    run = evaluate(judge, items, tmp_path, batch_size=2, progress=False, plots=False)
    assert len(backend.calls) == calls
    assert run.judged_items == 0
    assert run.resumed_items == 5


def test_a_different_run_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    judge, _ = mock_judge()
    evaluate(judge, load_items(ROWS), tmp_path, progress=False, plots=False)
    with pytest.raises(ValueError, match="different run"):
        evaluate(judge, load_items(ROWS, limit=2), tmp_path, progress=False, plots=False)
    fresh = evaluate(judge, load_items(ROWS, limit=2), tmp_path, progress=False, plots=False, fresh=True)
    assert len(read_results(tmp_path / "results.jsonl")) == 2 == len(fresh.records)


def test_a_run_recorded_before_a_new_config_field_still_resumes(tmp_path: Path) -> None:
    # run.json written by an older cerm lacks config fields added since (with defaults): the run is the same run.
    items = load_items(ROWS)
    judge, backend = mock_judge()
    evaluate(judge, items, tmp_path, batch_size=2, progress=False, plots=False)
    manifest = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    del manifest["judge"]["config"]["forced_readout"]
    (tmp_path / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    calls = len(backend.calls)
    run = evaluate(judge, items, tmp_path, batch_size=2, progress=False, plots=False)
    assert (len(backend.calls), run.resumed_items) == (calls, 5)
    # A setting that really differs still refuses the folder.
    other, _ = mock_judge()
    other.config = other.config.with_(evaluation_max_new_tokens=7)
    with pytest.raises(ValueError, match="differs in: judge"):
        evaluate(other, items, tmp_path, batch_size=2, progress=False, plots=False)


def test_a_corrupt_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    judge, _ = mock_judge()
    evaluate(judge, load_items(ROWS), tmp_path, progress=False, plots=False)
    path = tmp_path / "results.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text(lines[0] + "garbage\n" + "".join(lines[1:]), encoding="utf-8")
    with pytest.raises(DataError, match=r"results\.jsonl:2: malformed result line"):
        evaluate(judge, load_items(ROWS), tmp_path, progress=False, plots=False)


def test_cli_report_only_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cerm.cli import main

    judge, _ = mock_judge()
    evaluate(judge, load_items(ROWS), tmp_path / "run", progress=False, plots=False)
    assert main(["eval", "--out", str(tmp_path / "run"), "--report-only", "--tie-policy", "wrong", "--no-plots"]) == 0
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "| pairwise accuracy (ties: wrong, unscorable: wrong) | 57.1% |" in report  # (4 wins) / 7 pairs
    # Bad input fails fast with exit code 2 and a message naming the problem, before any model is loaded.
    assert main(["eval", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "no data file" in capsys.readouterr().err
    assert main(["eval", "--benchmark", "nosuch", "--out", str(tmp_path / "x")]) == 2
    assert "unknown benchmark 'nosuch'" in capsys.readouterr().err
    assert main(["eval", "--out", str(tmp_path / "empty"), "--report-only"]) == 2
    assert "not a cerm eval output folder" in capsys.readouterr().err
    assert main(["eval", "--out", str(tmp_path / "x")]) == 2


# -- errors are not final; provenance identifies the judge -------------------------------------------------------------
def test_errored_items_are_counted_then_judged_again_by_a_rerun(tmp_path: Path) -> None:
    from cerm.backends import Completion

    outage = {"on": True}

    def flaky(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if outage["on"] and "Q1?" in conversation[0]["content"] and len(conversation) > 1:
            return Completion.failed("connection refused")  # the server went down: no judgment
        return scripted(conversation, params, sample)

    items = load_items(ROWS)
    backend = MockBackend(flaky)
    first = evaluate(Judge(backend), items, tmp_path, batch_size=2, progress=False, plots=False)
    assert first.errored_items == 1
    p1 = first.records[1]
    assert [c["status"] for c in p1["candidates"]] == ["error", "error"]
    assert first.metrics["judgments"]["errors"] == 2
    assert "ERRORS: 2 judgment(s) in 1 item(s)" in first.report.read_text(encoding="utf-8")

    outage["on"] = False  # the server is back: a rerun judges p1 again (and only the chunk holding it)
    calls = len(backend.calls)
    second = evaluate(Judge(backend), items, tmp_path, batch_size=2, progress=False, plots=False)
    assert second.errored_items == 0
    assert (second.resumed_items, second.judged_items) == (4, 1)
    assert len(backend.calls) > calls
    assert [c["status"] for c in second.records[1]["candidates"]] == ["scored", "scored"]
    on_disk = read_results(tmp_path / "results.jsonl")
    assert [r["id"] for r in on_disk] == ["p0", "p1", "p2", "p3", "p4"]  # the errored try is gone, nothing doubled
    clean = evaluate(mock_judge()[0], items, tmp_path / "clean", batch_size=2, progress=False, plots=False)
    assert on_disk == clean.records


def test_a_rerun_with_other_backend_settings_is_refused(tmp_path: Path) -> None:
    class Described(MockBackend):
        def __init__(self, dtype: str) -> None:
            super().__init__(scripted)
            self.dtype = dtype

        def describe(self) -> dict[str, Any]:
            return {**super().describe(), "dtype": self.dtype, "adapter_sha256": "ab12"}

    items = load_items(ROWS)
    evaluate(Judge(Described("bfloat16")), items, tmp_path, progress=False, plots=False)
    manifest = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert manifest["judge"]["backend_settings"]["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match=r"backend settings \(dtype\)"):
        evaluate(Judge(Described("float32")), items, tmp_path, progress=False, plots=False)
    same = evaluate(Judge(Described("bfloat16")), items, tmp_path, progress=False, plots=False)
    assert same.resumed_items == 5
