"""Every example runs on the embedded demo model with small limits and prints real output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, timeout: int = 840) -> str:
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
def test_finer_scores_example() -> None:
    out = run_example("finer_scores.py", "24", "16")
    # The demo model does not close the format: plain is unscorable, the forced readout gives marked numbers.
    assert out.count("plain protocol : unscorable") == 2
    assert out.count("read as forced_expected") == 2
    assert "forced readout, not the judge's own boxed score" in out
    assert re.search(r"distribution   : \d", out)


@pytest.mark.model
def test_criteria_cache_example(tmp_path: Path) -> None:
    out = run_example("criteria_cache.py", "24", "8", str(tmp_path / "crit.sqlite"))
    assert "run 1: " in out
    assert "criteria from cache: False" in out
    assert "run 2: " in out
    assert "criteria from cache: True, criteria tokens generated: 0, cache hits/misses: 1/0" in out
    assert (tmp_path / "crit.sqlite").is_file()
