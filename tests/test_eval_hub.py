"""Benchmarks loaded where users get them, scored end to end, and the runner's handling of errors and provenance.

The fixtures in tests/fixtures/benchmarks/ are small files in each benchmark's raw hub (or release) schema, written for
these tests; they load through the same ``datasets.load_dataset`` call as the hub's files. Responses written
``score=X ...`` get the overall score X from the scripted judge, ``unrated ...`` an evaluation with no score
(UNSCORABLE), so every official figure below is known by hand (see test_eval_presets.py for the arithmetic).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from _support import SRC, scripted
from cerm import Judge
from cerm.backends import Completion, MockBackend
from cerm.eval import HUB_SOURCES, DataError, HubSource, evaluate, load_benchmark, report_from_results

pytest.importorskip("datasets")

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def score_of(query: str, response: str, sample: int) -> str | Completion:
    if response.startswith("unrated"):
        return Completion(text="I cannot decide between these.", finish_reason="stop")  # no box: UNSCORABLE
    if response.startswith("down"):
        return Completion.failed("connection refused")  # no judgment: ERROR
    match = re.match(r"score=(\S+)", response)
    return match.group(1) if match else "5"


def judge() -> Judge:
    return Judge(MockBackend(scripted(score_of)))


# -- loading -----------------------------------------------------------------------------------------------------------
def test_each_fixture_loads_through_load_dataset_in_its_raw_schema() -> None:
    rb2 = load_benchmark("rewardbench2", FIXTURES / "rewardbench2")
    assert len(rb2.items) == 9
    tied = next(i for i in rb2.items if i.meta["rb2_id"] == "tied:1")
    assert tied.labels == ("chosen", "chosen", "rejected", "rejected")
    assert rb2.provenance["files"] == ["test-00000-of-00001.parquet"]

    jb = load_benchmark("judgebench", FIXTURES / "judgebench")
    assert [i.meta["response_model"] for i in jb.items].count("gpt-4o-2024-05-13") == 4
    g2 = next(i for i in jb.items if i.id.endswith("-g2"))
    assert g2.meta["label"] == "B>A"
    assert g2.candidates[0] == "score=5 answer B"  # label B>A: response_B is the chosen one

    rmb = load_benchmark("rm-bench", FIXTURES / "rm-bench")
    assert rmb.items[0].styles == ("concise", "detailed_plain", "detailed_markdown") * 2
    assert rmb.items[0].category == "chat"

    llmbar = load_benchmark("llmbar", FIXTURES / "llmbar")
    assert sorted(i.subset for i in llmbar.items) == [
        "CaseStudy/Normal",
        "llmbar-adver-neighbor",
        "llmbar-natural",
        "llmbar-natural",
    ]
    neighbor = next(i for i in llmbar.items if i.subset == "llmbar-adver-neighbor")
    assert neighbor.candidates[0] == "score=9 chat"  # label 2: output_2 is the chosen one


PPE = FIXTURES / "ppe-correctness"
PPE_GPQA_PIN = "b24236a5e93649b7875155c8669d1ecd1aff3112"


def test_ppe_loads_each_set_from_its_own_folder_in_the_hub_schema() -> None:
    data = load_benchmark("ppe-correctness", PPE)
    assert sorted({i.subset for i in data.items}) == ["GPQA", "IFEval", "MATH", "MBPP-Plus", "MMLU-Pro"]
    assert len(data.items) == 8
    row = next(i for i in data.items if i.id == "ppe-MATH-q1-model-a")
    # correct responses are chosen, incorrect rejected, in the row's order (response_1 ... response_K)
    assert row.candidates == ("score=9 a", "score=3 b", "score=9 c", "score=5 d")
    assert row.labels == ("chosen", "rejected", "rejected", "chosen")
    assert row.meta == {"response_model": "model-a", "question_id": "q1"}
    assert row.prompt == "Question q1 of MATH?"
    assert "PPE-MATH-Best-of-K/data/train-00000-of-00001.parquet" in data.provenance["files"]


def test_ppe_first_k_responses_and_the_other_sources(tmp_path: Path) -> None:
    import datasets

    data = load_benchmark("ppe", PPE, k=2)
    assert data.provenance["k"] == 2
    assert all(len(i.candidates) == len(i.labels) == len(i.styles) == 2 for i in data.items)
    assert next(i for i in data.items if i.id == "ppe-MATH-q1-model-a").labels == ("chosen", "rejected")
    with pytest.raises(DataError, match="applies to ppe-correctness, not judgebench"):
        load_benchmark("judgebench", FIXTURES / "judgebench", k=2)
    with pytest.raises(DataError, match="k must be >= 2"):
        load_benchmark("ppe-correctness", PPE, k=1)

    # one set's file on its own: the set is read from the folders of its path
    one = load_benchmark("ppe-correctness", PPE / "PPE-GPQA-Best-of-K" / "data" / "train-00000-of-00001.parquet")
    assert [i.subset for i in one.items] == ["GPQA"]
    # a DatasetDict keyed by set name
    rows = datasets.load_dataset("parquet", data_files=str(one.provenance["path"]), split="train")
    by_set = load_benchmark("ppe-correctness", datasets.DatasetDict({"IFEval": rows}))
    assert [i.subset for i in by_set.items] == ["IFEval"]
    # a file whose path names no set is refused, with the layout to use
    alone = tmp_path / "train-00000-of-00001.parquet"
    rows.to_parquet(str(alone))
    with pytest.raises(DataError, match=r"no PPE set for this row.*DIR/PPE-MATH-Best-of-K/"):
        load_benchmark("ppe-correctness", alone)
    bad = tmp_path / "MATH" / "train.jsonl"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"prompt": "q", "response_1": "a", "response_2": "b", "scores": [True]}) + "\n")
    with pytest.raises(DataError, match=r"'scores' must hold one boolean per response \(2\)"):
        load_benchmark("ppe-correctness", tmp_path / "MATH")


def test_ppe_from_the_hub_reads_each_set_at_its_own_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub

    calls: list[tuple[str, str, str]] = []
    tables = {
        f"lmarena-ai/{folder.name}": datasets.load_dataset(
            "parquet", data_files=str(folder / "data" / "train-00000-of-00001.parquet"), split="train"
        )
        for folder in PPE.iterdir()
    }

    def fake_load(path: str, name: Any = None, *, split: str, revision: str) -> Any:
        calls.append((path, split, revision))
        return tables[path]

    def fake_info(self: Any, repo_id: str, *, revision: str) -> Any:
        return SimpleNamespace(sha=revision if len(revision) == 40 else "f" * 40)

    monkeypatch.delenv("CERM_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", fake_info)
    data = load_benchmark("ppe-correctness")
    assert calls == [
        ("lmarena-ai/PPE-MMLU-Pro-Best-of-K", "train", "f" * 40),
        ("lmarena-ai/PPE-MATH-Best-of-K", "train", "f" * 40),
        ("lmarena-ai/PPE-GPQA-Best-of-K", "train", PPE_GPQA_PIN),
        ("lmarena-ai/PPE-IFEval-Best-of-K", "train", "f" * 40),
        ("lmarena-ai/PPE-MBPP-Plus-Best-of-K", "train", "f" * 40),
    ]
    assert len(data.items) == 8
    parts = {p["part"]: p for p in data.provenance["parts"]}
    assert (parts["GPQA"]["revision"], parts["GPQA"]["resolved_revision"]) == (PPE_GPQA_PIN, PPE_GPQA_PIN)
    assert (parts["MATH"]["revision"], parts["MATH"]["resolved_revision"]) == ("main", "f" * 40)
    assert parts["MATH"]["url"] == "https://huggingface.co/datasets/lmarena-ai/PPE-MATH-Best-of-K"
    calls.clear()
    only = load_benchmark("ppe-correctness", splits=["MATH"])
    assert [c[0] for c in calls] == ["lmarena-ai/PPE-MATH-Best-of-K"]
    assert {i.subset for i in only.items} == {"MATH"}
    with pytest.raises(DataError, match="no part"):
        load_benchmark("ppe-correctness", splits=["HumanEval"])


def test_a_datasets_object_and_cerm_data_dir_are_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    rows = [json.loads(line) for line in (FIXTURES / "judgebench" / "gpt-00000-of-00001.jsonl").open()]
    data = load_benchmark("judgebench", datasets.DatasetDict({"gpt": datasets.Dataset.from_list(rows)}))
    assert len(data.items) == 4
    assert data.provenance["source"] == "dataset"
    assert len(load_benchmark("judgebench", datasets.Dataset.from_list(rows[:2])).items) == 2

    monkeypatch.setenv("CERM_DATA_DIR", str(FIXTURES))
    from_env = load_benchmark("rm_bench", limit=2, seed=1)
    assert from_env.benchmark == "rm-bench"
    assert from_env.provenance["path"] == str(FIXTURES / "rm-bench")
    assert len(from_env.items) == 2


def _fake_hub(monkeypatch: pytest.MonkeyPatch, commits: dict[str, str] | None) -> list[tuple[Any, ...]]:
    """datasets.load_dataset answered from the JudgeBench fixture, and the hub's revision lookup answered from
    ``commits`` (revision -> commit; None: the hub cannot be reached). Returns the recorded load calls."""
    import datasets
    import huggingface_hub

    calls: list[tuple[Any, ...]] = []
    rows = {
        split: [json.loads(line) for line in (FIXTURES / "judgebench" / f"{split}-00000-of-00001.jsonl").open()]
        for split in ("gpt", "claude")
    }

    def fake_load(path: str, name: Any = None, *, split: str, revision: str) -> Any:
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list(rows[split])

    def fake_info(self: Any, repo_id: str, *, revision: str) -> Any:
        if commits is None:
            raise ConnectionError("no network")
        return SimpleNamespace(sha=commits[revision])

    monkeypatch.delenv("CERM_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", fake_info)
    return calls


def test_pins_are_full_commits_or_none() -> None:
    for name, hub in HUB_SOURCES.items():
        assert hub.revision is None or len(hub.revision) == 40, name
    assert HUB_SOURCES["rewardbench2"].revision == "7ff08853b0d5686e79b13fda8677024f566a104a"
    assert HUB_SOURCES["judgebench"].revision is None  # only a short id was found: the default branch, resolved
    assert HUB_SOURCES["judgebench"].written_against == "57dd5e0"
    with pytest.raises(ValueError, match="full 40-character commit"):
        HubSource("x/y", ("train",), "57dd5e0")


def test_the_hub_revision_is_resolved_once_and_every_split_read_from_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    main = "57dd5e0" + "a" * 33
    calls = _fake_hub(monkeypatch, {"main": main, "v2": "b" * 40})
    with caplog.at_level(logging.WARNING, logger="cerm"):
        data = load_benchmark("judgebench")
    assert calls == [("ScalerLab/JudgeBench", None, "gpt", main), ("ScalerLab/JudgeBench", None, "claude", main)]
    assert len(data.items) == 6
    assert data.provenance == {
        "benchmark": "judgebench",
        "source": "hub",
        "hub_id": "ScalerLab/JudgeBench",
        "config": None,
        "splits": ["gpt", "claude"],
        "revision": "main",
        "resolved_revision": main,
        "url": "https://huggingface.co/datasets/ScalerLab/JudgeBench",
    }
    assert "written against" not in caplog.text  # main is still the commit the adapter was written against
    calls.clear()
    data = load_benchmark("judgebench", revision="v2", splits=["claude"])
    assert calls == [("ScalerLab/JudgeBench", None, "claude", "b" * 40)]
    assert (data.provenance["revision"], data.provenance["resolved_revision"]) == ("v2", "b" * 40)


def test_a_moved_default_branch_is_told_and_an_unreachable_hub_is_recorded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = _fake_hub(monkeypatch, {"main": "c" * 40})
    with caplog.at_level(logging.WARNING, logger="cerm"):
        load_benchmark("judgebench")
    assert "the hub's main is now commit " + "c" * 40 in caplog.text
    assert "written against 57dd5e0" in caplog.text
    calls = _fake_hub(monkeypatch, None)  # the lookup fails; datasets may still have the data (its cache)
    data = load_benchmark("judgebench", splits=["gpt"])
    assert calls == [("ScalerLab/JudgeBench", None, "gpt", "main")]
    assert data.provenance["resolved_revision"] is None
    assert "ConnectionError: no network" in data.provenance["revision_note"]


def test_offline_the_error_names_the_hub_id_and_the_local_way(tmp_path: Path) -> None:
    code = (
        "from cerm.eval import load_benchmark, DataError\n"
        "try:\n    load_benchmark('rewardbench2')\nexcept DataError as exc:\n    print(exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(SRC)}
    env.pop("CERM_DATA_DIR", None)
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache: nothing to fall back on
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    message = done.stdout
    assert "allenai/reward-bench-2" in message
    assert f"revision '{HUB_SOURCES['rewardbench2'].revision}'" in message
    assert "--data DIR" in message
    assert "CERM_DATA_DIR" in message


def test_bad_raw_rows_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "gpt-00000-of-00001.jsonl"
    bad.write_text(json.dumps({"question": "q", "response_A": "a", "response_B": "b", "label": "A=B"}) + "\n")
    with pytest.raises(DataError, match=r"'label' must be 'A>B' or 'B>A', got 'A=B'"):
        load_benchmark("judgebench", tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        load_benchmark("judgebench", tmp_path / "nothing")


# -- end to end: fixture -> judge -> official figures -> report --------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "headline"),
    [
        # Factuality .75, Precise IF 0, Math .25, Safety .25, Focus 1, Ties 1 + .01 tanh(1): mean of six
        ("rewardbench2", (0.75 + 0 + 0.25 + 0.25 + 1 + 1 + 0.01 * 0.7615941559557649) / 6),
        ("judgebench", 0.25),  # GPT-4o split: g1 right; g2, g3 tied; g4 unrated
        ("rm-bench", None),  # math missing: no headline
        ("rewardbench", (0.5 + 1 + 0 + 984 / 1148) / 4),
        ("llmbar", (100 * 0.5 + 134 * 1) / 234),
        # pairwise per set: MMLU-Pro 1, MATH .5, GPQA .5, IFEval 0 (all unrated), MBPP-Plus .5 (one ERROR): mean of five
        ("ppe-correctness", 0.5),
    ],
)
def test_fixture_runs_give_the_official_numbers(name: str, headline: float | None, tmp_path: Path) -> None:
    data = load_benchmark(name, FIXTURES / name)
    run = evaluate(
        judge(), data.items, tmp_path, benchmark=name, data_source=data.provenance, progress=False, plots=False
    )
    result = run.metrics["benchmark"]
    if headline is None:
        assert result.headline.value is None
        assert result.extras["mean_of_present_domains"] == pytest.approx((4 / 9 + 1 + 0) / 3)
    else:
        assert result.headline.value == pytest.approx(headline)
    manifest = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert manifest["benchmark"] == name
    assert manifest["data_source"]["source"] == "local"
    assert manifest["judge"]["backend_settings"] == {"backend": "mock", "model": "mock-judge"}
    report = run.report.read_text(encoding="utf-8")
    heading = "official scoring" if name != "ppe-correctness" else "preset scoring, cerm's own rules"
    assert result.official == (name != "ppe-correctness")  # PPE's official code could not be read
    official = report.index(f"## {name}: {heading}")
    assert official < report.index("## Summary")  # the official layout comes first
    assert "coverage" in report[official : report.index("## Summary")]
    # Every score is kept per item, so --report-only can re-read the run under the preset's other rule.
    assert all("status" in c and "score" in c for r in run.records for c in r["candidates"])


def test_report_only_rereads_another_rule(tmp_path: Path) -> None:
    data = load_benchmark("judgebench", FIXTURES / "judgebench")
    evaluate(judge(), data.items, tmp_path, benchmark="judgebench", progress=False, plots=False)
    metrics, report, _ = report_from_results(tmp_path, rule="single_game", plots=False)
    assert metrics["benchmark"].rule == "single_game"
    assert metrics["benchmark"].headline.value == 0.5
    assert "official scoring (rule: single_game)" in report.read_text(encoding="utf-8")


@pytest.fixture
def scripted_cli_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cerm eval` judges with the scripted backend (the CLI's own judge settings applied) instead of a model."""
    import cerm.cli._common as common

    def scripted_judge(args: Any) -> Judge:
        return Judge(MockBackend(scripted(score_of)), config=common.config_from_args(args))

    monkeypatch.setattr(common, "judge_from_args", scripted_judge)


@pytest.mark.usefixtures("scripted_cli_judge")
def test_cli_benchmark_with_a_local_copy_and_a_data_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cerm.cli import main

    out = tmp_path / "rb"
    code = main(
        ["eval", "--benchmark", "rewardbench", "--data", str(FIXTURES / "rewardbench"), "--out", str(out),
         "--limit", "4", "--data-seed", "3", "--seed", "11", "--no-plots", "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert manifest["n_items"] == 4
    assert manifest["info"]["slice"] == "4 items sampled with data seed 3 (kept in data order)"
    assert manifest["judge"]["config"]["seed"] == 11  # the judge's seed is its own setting
    assert "rewardbench Leaderboard average" in err


def test_cli_refuses_preset_options_without_a_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cerm.cli import main

    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"id": "a", "prompt": "q", "chosen": "x", "rejected": ["y"]}) + "\n")
    assert main(["eval", "--data", str(mine), "--rule", "single_game", "--out", str(tmp_path / "o")]) == 2
    assert "add --benchmark NAME" in capsys.readouterr().err
    assert main(["eval", "--benchmark", "judgebench", "--rule", "both", "--data", str(FIXTURES / "judgebench"),
                 "--out", str(tmp_path / "o"), "--model", "nosuch-model-for-this-test"]) == 2  # fmt: skip
    assert "--rule must be one of pointwise, single_game" in capsys.readouterr().err
    assert main(["eval", "--data", str(mine), "--ppe-k", "4", "--out", str(tmp_path / "o")]) == 2
    assert "add --benchmark NAME" in capsys.readouterr().err


@pytest.mark.usefixtures("scripted_cli_judge")
def test_cli_ppe_with_the_first_k_responses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cerm.cli import main

    out = tmp_path / "ppe"
    code = main(["eval", "--benchmark", "ppe-correctness", "--data", str(PPE), "--ppe-k", "2", "--out", str(out),
                 "--no-plots", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 5, err  # EXIT_ERRORED: MBPP-Plus's first response errors (no judgment): the run says so
    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert manifest["data_source"]["k"] == 2
    records = [json.loads(line) for line in (out / "results.jsonl").open()]
    assert all(len(r["candidates"]) == 2 for r in records)
    # first two responses only: MMLU-Pro m3 (correct 6 vs 4) 1, MATH a (correct 9 vs 3) 1 and b (correct 7 vs 2) 1,
    # GPQA (8, 8 both correct) no pair, IFEval unrated 0, MBPP-Plus error 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    rows = {r["name"]: r["value"] for r in metrics["benchmark"]["tables"][0]["rows"]}
    assert rows == {"MMLU-Pro": 1.0, "MATH": 1.0, "GPQA": None, "IFEval": 0.0, "MBPP-Plus": 0.0,
                    "Mean of the five sets": None}  # fmt: skip
    # a set without a pairwise figure leaves the mean of the five uncomputed; the mean of the others is shown apart
    assert metrics["benchmark"]["extras"]["pairwise_mean_of_present_sets"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert "ppe-correctness Pairwise accuracy, mean of the five sets: n/a" in err


def test_a_hub_download_folder_loads_with_its_cache_ignored(tmp_path: Path) -> None:
    # huggingface-cli download --local-dir DIR writes the hub's layout (data/, README.md) and a hidden .cache/ folder.
    import shutil

    shutil.copytree(FIXTURES / "judgebench", tmp_path / "data")
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n", encoding="utf-8")
    (tmp_path / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "gpt-stale.jsonl").write_text("not json\n", encoding="utf-8")
    data = load_benchmark("judgebench", tmp_path)
    assert len(data.items) == 6
    assert data.provenance["files"] == ["data/gpt-00000-of-00001.jsonl", "data/claude-00000-of-00001.jsonl"]


def test_datasets_is_imported_only_to_load_a_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    code = "import sys, cerm.eval, cerm.cli._eval; print('datasets' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr
    # Without the package, loading a benchmark says what to install; your own JSONL needs nothing.
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"pip install 'ce-rm\[eval\]'"):
        load_benchmark("judgebench", FIXTURES / "judgebench")
