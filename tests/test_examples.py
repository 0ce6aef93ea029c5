"""Every example runs on the embedded demo model with small limits and prints real output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, timeout: int = 1200) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert out.returncode == 0, f"{name} failed:\n{out.stdout}\n{out.stderr[-4000:]}"
    return out.stdout


# -- RL integrations (issue: Best-of-N and RL integrations) ----------------------------------------------------------
@pytest.mark.model
def test_example_grpo_trl(tmp_path: Path) -> None:
    stdout = run_example("grpo_trl.py", "--steps", "2", "--generations", "2", "--output-dir", str(tmp_path))
    assert "GRPO finished: 2 optimisation steps" in stdout
    assert stdout.count("unscorable fraction") == 2


@pytest.mark.model
def test_example_verl_reward() -> None:
    lines = [line for line in run_example("verl_reward.py").splitlines() if line.startswith("{")]
    assert len(lines) == 3
    assert all('"score"' in line and '"scorable"' in line for line in lines)


@pytest.mark.model
def test_example_reward_server() -> None:
    stdout = run_example("reward_server.py")
    assert "server up at http://127.0.0.1:" in stdout
    assert '"rewards"' in stdout
    assert '"cerm_scorable"' in stdout
    assert "server stopped" in stdout


@pytest.mark.model
def test_example_best_of_n() -> None:
    stdout = run_example("best_of_n.py", "--n", "2", "--policy-tokens", "8")
    assert "best_index=" in stdout
    assert stdout.count("score=") >= 2
    assert "rerank: best_index=" in stdout
