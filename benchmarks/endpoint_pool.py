"""Throughput of the openai backend's endpoint pool over 1, 2 and 4 servers.

Part 1: the fault-injecting test server (tests/_openai_servers.py, no faults scheduled) with a fixed latency L, one
child process per server, each taking at most C requests at once from the client (``endpoint_max_concurrency``, as a
real server's batch slots would): the ideal is servers * C / L requests/s. M requests per run; the table reports
requests/s, its share of the ideal, and the client's CPU milliseconds per request (this process only).

Part 2 (``--llama-cpp``): the embedded demo model behind 1 and then 2 llama.cpp servers (one request in flight per
server, as llama.cpp's server decodes one at a time): generated tokens per second.

    python benchmarks/endpoint_pool.py                       # M=1024, C=16, L=0.1
    python benchmarks/endpoint_pool.py --llama-cpp --llama-requests 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cerm.backends import SamplingParams
from cerm.backends.openai import OpenAIBackend

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
_CHILD = """
import sys
from _openai_servers import FaultServer
server = FaultServer(latency_s=float(sys.argv[1]))
with server.running():
    print(server.port, flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def test_servers(count: int, latency: float) -> Iterator[list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(count)
    ]
    try:
        yield [f"http://127.0.0.1:{int(p.stdout.readline())}/v1" for p in procs if p.stdout is not None]
    finally:
        for p in procs:
            p.kill()
            p.wait(30)


def pool_run(urls: list[str], m: int, per_server: int) -> dict[str, Any]:
    convs = [[{"role": "user", "content": f"request {i}"}] for i in range(m)]
    params = SamplingParams(max_new_tokens=16)
    with OpenAIBackend(
        "bench", base_urls=urls, api_key="sk-bench", max_concurrency=4096, endpoint_max_concurrency=per_server
    ) as backend:
        backend.generate(convs[:8], params)  # connections and the I/O loop up before timing
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out = backend.generate(convs, params)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stats = backend.endpoint_stats()
    failed = sum(1 for c in out if c[0].finish_reason == "error")
    return {
        "servers": len(urls),
        "requests": m,
        "failed": failed,
        "wall_s": wall,
        "requests_per_s": m / wall,
        "client_cpu_ms_per_request": 1000 * cpu / m,
        "per_server_requests": [s.requests for s in stats],
    }


def llama_run(count: int, requests: int, max_tokens: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from _openai_servers import llama_cpp_python, llama_cpp_server
    from cerm._embedded import demo_gguf_path

    python = llama_cpp_python()
    if python is None:
        raise SystemExit("no llama.cpp server: `make venv-llama`, or set CERM_LLAMA_PYTHON")
    convs = [[{"role": "user", "content": f"Write a short story about the number {i}."}] for i in range(requests)]
    params = SamplingParams(max_new_tokens=max_tokens)
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(llama_cpp_server(demo_gguf_path(), python=python)) for _ in range(count)]
        with OpenAIBackend("demo", base_urls=urls, endpoint_max_concurrency=1, timeout=1200) as backend:
            backend.generate(convs[:1], SamplingParams(max_new_tokens=2))  # warm up
            wall0 = time.perf_counter()
            out = backend.generate(convs, params)
            wall = time.perf_counter() - wall0
    tokens = sum(c[0].completion_tokens for c in out)
    return {
        "servers": count,
        "requests": requests,
        "failed": sum(1 for c in out if c[0].finish_reason == "error"),
        "completion_tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=1024, help="requests per run")
    parser.add_argument("--c", type=int, default=16, help="requests in flight per server")
    parser.add_argument("--latency", type=float, default=0.1, help="test server latency L in seconds")
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--llama-cpp", action="store_true", help="also 1 vs 2 llama.cpp servers (tokens/s)")
    parser.add_argument("--llama-requests", type=int, default=8)
    parser.add_argument("--llama-tokens", type=int, default=32)
    args = parser.parse_args()

    rows = []
    print(f"| servers | requests/s | % of ideal ({args.c}/{args.latency:g} s each) | client CPU ms/request | failed |")
    print("|---|---|---|---|---|")
    for count in args.servers:
        with test_servers(count, args.latency) as urls:
            row = pool_run(urls, args.m, args.c)
        ideal = count * args.c / args.latency
        row["share_of_ideal"] = row["requests_per_s"] / ideal
        rows.append(row)
        print(
            f"| {count} | {row['requests_per_s']:.0f} | {100 * row['share_of_ideal']:.0f}% | "
            f"{row['client_cpu_ms_per_request']:.2f} | {row['failed']} |"
        )
    llama = []
    if args.llama_cpp:
        print("\n| llama.cpp servers | generated tokens/s | tokens | wall s | failed |")
        print("|---|---|---|---|---|")
        for count in (1, 2):
            row = llama_run(count, args.llama_requests, args.llama_tokens)
            llama.append(row)
            print(
                f"| {count} | {row['tokens_per_s']:.1f} | {row['completion_tokens']} | {row['wall_s']:.1f} | "
                f"{row['failed']} |"
            )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "endpoint_pool.json"
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    settings = {"m": args.m, "c": args.c, "latency": args.latency}
    payload = {"machine": machine, "settings": settings, "test_servers": rows, "llama_cpp": llama}
    out.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
