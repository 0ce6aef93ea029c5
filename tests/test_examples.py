"""Every script in examples/ runs in CI on the embedded model, so none of them rots.

Each example declares how CI runs it in comment lines near the top:
    # ci: <arguments>              small limits for CI (required: an example without it fails this test)
    # ci-requires: mod1 mod2       importable modules it needs; missing ones skip the case with a clear reason
    # ci-expect: <text>            text its stdout must contain (repeatable)
    # ci-slow                      the case is marked slow (CI's representative set skips it)
    # ci-custom: tests/FILE.py     it needs a fixture (a server): that test file runs it instead of this one
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
_KEYS = ("ci-requires", "ci-expect", "ci-slow", "ci-custom", "ci")


def _directives(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[:60]:
        for key in _KEYS:
            if line.startswith(f"# {key}:") or line.strip() == f"# {key}":
                found.setdefault(key, []).append(line[len(f"# {key}:") :].strip())
                break
    return found


def _cases() -> list[object]:
    cases = []
    for path in EXAMPLES:
        if "ci-custom" in _directives(path):
            continue
        marks = [pytest.mark.model]
        if "ci-slow" in _directives(path):
            marks.append(pytest.mark.slow)
        cases.append(pytest.param(path, id=path.stem, marks=marks))
    return cases


@pytest.mark.parametrize("script", _cases())
def test_example_runs(script: Path, tmp_path: Path) -> None:
    directives = _directives(script)
    assert "ci" in directives, f"{script.name} has no '# ci: <args>' line saying how CI runs it"
    required = " ".join(directives.get("ci-requires", [])).split()
    missing = [m for m in required if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{script.name} needs {', '.join(missing)}")
    args = shlex.split(directives["ci"][0].replace("{tmp}", str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "CERM_EXAMPLE_OUT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
    )
    detail = f"STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{script.name} failed:\n{detail}"
    assert proc.stdout.strip(), f"{script.name} printed nothing"
    for expected in directives.get("ci-expect", []):
        assert expected in proc.stdout, f"{script.name}: {expected!r} not in its output:\n{detail}"
