"""Every example runs on the embedded demo model with small limits and prints real output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, timeout: int = 900) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("CERM_MODEL", None)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.model
def test_evaluate_example(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "eval"
    out = run_example("evaluate.py", "llmbar", "1", "8", str(out_dir))
    assert "items: 1 (resumed 0), pairs: 1" in out
    assert "pairwise accuracy: " in out
    assert "unscorable judgments: " in out
    assert (out_dir / "report.md").read_text(encoding="utf-8").startswith("# cerm eval: llmbar")
    assert len((out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 1
    assert out.count("plot: ") == 3
    again = run_example("evaluate.py", "llmbar", "1", "8", str(out_dir))
    assert "items: 1 (resumed 1), pairs: 1" in again  # the rerun resumed: nothing judged twice
