"""examples/openai_backend.py against a real llama.cpp server (the generic examples test cannot start servers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from _openai_servers import llama_cpp_server, require_llama_cpp

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.model
@pytest.mark.timeout(300)
def test_openai_backend_example_against_llama_cpp() -> None:
    python = require_llama_cpp()
    from cerm._embedded import demo_gguf_path

    with llama_cpp_server(demo_gguf_path(), python=python) as base_url:
        done = run_example("openai_backend.py", base_url, "demo", "32")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["response 0", "response 1", "response 2"]
    assert all(("UNSCORABLE" in line) or line.split(": ")[1].replace(".", "").isdigit() for line in lines[:3])
    assert "generation failed" not in done.stdout  # the server really answered every request
    assert "'backend': 'openai'" in done.stdout
    assert "async scores: [" in done.stdout
