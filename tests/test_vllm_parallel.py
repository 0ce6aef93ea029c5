"""vLLM across GPUs: tensor and data parallelism passed through to the engine.

The settings plumbing is checked on any machine (no vLLM needed: the engine arguments are built by a pure function).
The engine test needs vLLM and two CUDA devices and skips cleanly without them."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from cerm import ConfigurationError
from cerm.backends.vllm import VLLMBackend, engine_arguments

BASE: dict[str, Any] = {
    "tokenizer": None,
    "dtype": "bfloat16",
    "tensor_parallel_size": 1,
    "data_parallel_size": 1,
    "enforce_eager": False,
    "enable_prefix_caching": True,
    "trust_remote_code": False,
    "revision": None,
    "seed": 0,
    "log_stats": True,
    "max_model_len": None,
    "gpu_memory_utilization": None,
    "kv_cache_memory_bytes": None,
    "max_lora_rank": None,
    "lora": False,
    "extra": {},
}


def test_tensor_parallel_size_reaches_the_engine() -> None:
    args = engine_arguments(**{**BASE, "tensor_parallel_size": 4})
    assert args["tensor_parallel_size"] == 4
    assert "data_parallel_size" not in args  # 1 is vLLM's default: not sent
    assert args["enable_prefix_caching"] is True


def test_data_parallel_goes_with_an_external_launcher() -> None:
    extra = {"distributed_executor_backend": "external_launcher"}
    args = engine_arguments(**{**BASE, "tensor_parallel_size": 2, "data_parallel_size": 4, "extra": extra})
    assert (args["tensor_parallel_size"], args["data_parallel_size"]) == (2, 4)
    assert args["distributed_executor_backend"] == "external_launcher"
    VLLMBackend._check_settings(None, None, 2, 4, None, extra)  # accepted


def test_bad_parallel_settings_are_refused_before_vllm_is_needed() -> None:
    with pytest.raises(ConfigurationError, match="tensor_parallel_size"):
        VLLMBackend._check_settings(None, None, 0, 1, None, {})
    with pytest.raises(ConfigurationError, match="data_parallel_size"):
        VLLMBackend._check_settings(None, None, 1, 0, None, {})
    with pytest.raises(ConfigurationError, match="external_launcher"):
        VLLMBackend._check_settings(None, None, 1, 2, None, {})
    with pytest.raises(ConfigurationError, match="tensor_parallel_size"):
        VLLMBackend("demo", tensor_parallel_size=0)  # refused before vLLM is imported


def _cuda_devices() -> int:
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (the GPU build: pip install vllm)")
@pytest.mark.skipif(_cuda_devices() < 2, reason="tensor parallelism needs two CUDA devices")
def test_tensor_parallel_engine_on_two_gpus() -> None:
    from cerm import Judge, JudgeConfig

    config = JudgeConfig(criteria_max_new_tokens=16, evaluation_max_new_tokens=16)
    with VLLMBackend("demo", tensor_parallel_size=2, max_model_len=2048, enforce_eager=True) as backend:
        assert backend.describe()["tensor_parallel_size"] == 2
        judgments = Judge(backend, config=config).judge("What is 2+2?", ["4", "5"])
    assert [j.response_index for j in judgments] == [0, 1]
    assert all(j.status.value != "error" for j in judgments)
