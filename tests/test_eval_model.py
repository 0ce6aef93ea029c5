"""The evaluation harness on the real embedded model: small slices of every shared benchmark, and resume after a
killed ``python -m cerm eval`` subprocess (greedy decoding makes the rerun's report identical)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support import SHARED_DATA, needs_shared
from cerm import BackendUnavailableError, Judge, JudgeConfig, ModelNotFoundError
from cerm.eval import EvalItem, evaluate, load_items

pytestmark = pytest.mark.model

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def _shared_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERM_DATA_DIR", str(SHARED_DATA))


@pytest.fixture(scope="module")
def demo_judge() -> Iterator[Judge]:
    try:
        judge = Judge("demo-base", config=JudgeConfig(criteria_max_new_tokens=12, evaluation_max_new_tokens=12))
    except (BackendUnavailableError, ModelNotFoundError) as exc:
        pytest.skip(f"embedded demo model not available: {exc}")
    with judge:
        yield judge


def shortest(name: str, n: int) -> list[EvalItem]:
    """The n shortest of a fixed seeded sample: real benchmark items, small enough for a 2-core CI machine."""
    sample = load_items(name, limit=30, seed=0)
    return sorted(sample, key=lambda i: len(i.prompt) + sum(map(len, i.candidates)))[:n]


@needs_shared
@pytest.mark.parametrize("name", ["llmbar", "judgebench", "rm_bench", "hh_rlhf"])
def test_each_shared_benchmark_on_the_demo_model(demo_judge: Judge, name: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    items = shortest(name, 1)
    run = evaluate(demo_judge, items, tmp_path, data_name=name, progress=False, full=True)
    assert len(run.records) == 1
    record = run.records[0]
    assert record["criteria"]  # the real model wrote a criteria turn (it rarely follows the format)
    assert len(record["candidates"]) == len(items[0].candidates)
    for cand in record["candidates"]:
        assert cand["evaluation"] is not None
        if cand["status"] == "scored":
            assert 0 <= cand["score"] <= 10
            assert cand["reason"] is None
        else:
            assert cand["status"] == "unscorable"
            assert cand["score"] is None
            assert cand["reason"]
    metrics = run.metrics
    assert metrics["judgments"]["judgments"] == len(items[0].candidates)
    stats = metrics["pairwise"]
    assert stats.wins + stats.losses + stats.ties + stats.unscorable == stats.n
    report = run.report.read_text(encoding="utf-8")
    assert f"# cerm eval: {name}" in report
    assert "## Summary" in report
    assert "## Length bias" in report
    if name == "rm_bench":
        assert stats.n == 9
        assert "## RM-Bench style grid" in report
        assert metrics["best_of_n"][0].n_candidates == 4
    if name == "judgebench":
        assert "## Per response model" in report
    assert all(p.is_file() and p.stat().st_size > 1000 for p in run.plots)


def _command(data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "cerm", "eval", "--data", str(data), "--out", str(out), "--batch-size", "1",
        "--criteria-max-new-tokens", "8", "--evaluation-max-new-tokens", "8", "--no-plots", "--no-progress",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@needs_shared
def test_killed_run_resumes_to_the_same_report(tmp_path: Path) -> None:
    try:
        from cerm._embedded import demo_model_path

        demo_model_path()
    except (BackendUnavailableError, ModelNotFoundError) as exc:
        pytest.skip(f"embedded demo model not available: {exc}")
    data = tmp_path / "slice.jsonl"
    items = shortest("llmbar", 5)
    data.write_text(
        "".join(
            json.dumps({"id": i.id, "category": i.category, "subset": i.subset, "prompt": i.prompt,
                        "chosen": i.candidates[0], "rejected": list(i.candidates[1:])}) + "\n"
            for i in items
        ),
        encoding="utf-8",
    )  # fmt: skip

    whole = tmp_path / "whole"
    done = subprocess.run(_command(data, whole), env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    results = killed / "results.jsonl"
    proc = subprocess.Popen(_command(data, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while _lines(results) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    written = _lines(results)
    assert 2 <= written < len(items), f"the run was not killed mid-way ({written} lines written)"
    assert not (killed / "report.md").exists()

    rerun = subprocess.run(_command(data, killed), env=_env(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({written} resumed)" in rerun.stderr
    assert (killed / "results.jsonl").read_text(encoding="utf-8") == (whole / "results.jsonl").read_text("utf-8")
    assert (killed / "report.md").read_text(encoding="utf-8") == (whole / "report.md").read_text(encoding="utf-8")
    ids = [json.loads(line)["id"] for line in (killed / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert ids == [i.id for i in items]  # nothing lost, nothing twice, data order
