"""Client-side throughput and CPU cost of the openai backend against a stub server with a fixed latency.

A stub OpenAI-compatible server (aiohttp, in its own process) answers every chat request after L seconds. M requests
are sent with at most C in flight by:

  raw-aiohttp     a bare aiohttp loop with a semaphore: the floor for a Python client
  openai-default  the plain AsyncOpenAI client exactly as constructed by default (httpx transport, default pool)
  openai          the same client with its connection pool sized to C (max and keep-alive connections)
  openai-aiohttp  the same client over its aiohttp transport (DefaultAioHttpClient), pool sized to C
  cerm-backend    cerm's OpenAIBackend.generate on the same conversations (no Judge)
  cerm-judge      the full Judge path: Judge.judge(query, M responses) = 1 criteria request + M evaluations

and the table reports requests/s, % of the ideal min(C, M) / L, and the client's CPU milliseconds per request
(process CPU time of this process, the server excluded). With ``--llama-cpp`` it also measures the tokens/s of
llama.cpp's server on the embedded demo model.

    python benchmarks/openai_backend.py                       # M=2048, C in 8 64 256, L=0.2
    python benchmarks/openai_backend.py --m 256 --c 8 64      # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cerm import Judge, JudgeConfig
from cerm.backends import SamplingParams
from cerm.backends.openai import OpenAIBackend
from cerm.protocol import Conversation, evaluation_conversation

QUERY = "Explain what a hash map is and when you would use one, in a short paragraph."
CRITERIA = (
    "The query asks for a short, correct explanation.\n[Start of Criteria]\n1. Accuracy: the definition is correct\n"
    "2. Use cases: names when a hash map fits\n3. Concision: one short paragraph\n[End of Criteria]"
)
EVALUATION = (
    "1. Accuracy: the response defines a hash map as key-value storage with hashing. Score: \\boxed{4}\n"
    "2. Use cases: it names fast lookups by key. Score: \\boxed{4}\n"
    "3. Concision: one paragraph. Score: \\boxed{5}\n"
    "Other Point(s): none.\nOverall, the response is accurate and concise. Overall score: \\boxed{8}"
)
RESULTS = Path(__file__).parent / "results"


# -- the stub server (run in a child process) -------------------------------------------------------------------------
def serve(port: int, latency: float) -> None:
    from aiohttp import web

    def answer(text: str) -> bytes:
        return json.dumps(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": 0,
                "model": "stub",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 900, "completion_tokens": 120, "total_tokens": 1020},
            }
        ).encode()

    criteria_body, evaluation_body = answer(CRITERIA), answer(EVALUATION)

    async def handle(request: web.Request) -> web.Response:
        # The server shares the CPUs with the client under test: it does as little as it can (no JSON parsing).
        raw = await request.read()
        await asyncio.sleep(latency)
        payload = evaluation_body if b'"assistant"' in raw else criteria_body
        return web.Response(body=payload, content_type="application/json")

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server at {url} not ready in {limit} s") from None
            time.sleep(0.2)


# -- clients -----------------------------------------------------------------------------------------------------------
def conversations(m: int) -> list[Conversation]:
    return [
        evaluation_conversation(QUERY, CRITERIA, f"Response {i}: a hash map stores key-value pairs.") for i in range(m)
    ]


def _body(conv: Conversation) -> dict[str, Any]:
    return {"model": "stub", "messages": conv, "max_tokens": 512, "temperature": 0.0}


async def raw_aiohttp(base_url: str, convs: list[Conversation], c: int) -> int:
    import aiohttp

    sem = asyncio.Semaphore(c)
    ok = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        async def one(conv: Conversation) -> None:
            nonlocal ok
            async with sem, session.post(f"{base_url}/chat/completions", json=_body(conv)) as resp:
                data = await resp.json()
                ok += bool(data["choices"][0]["message"]["content"])

        await asyncio.gather(*(one(conv) for conv in convs))
    return ok


async def plain_openai(base_url: str, convs: list[Conversation], c: int, transport: str) -> int:
    import openai

    timeout = openai.DEFAULT_TIMEOUT.__class__(600.0, connect=60.0)  # generous: measure speed, not timeouts
    if transport == "default":  # the client as users construct it (default pool: 1000 connections, 100 kept alive)
        client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=timeout)
    else:  # a pool sized to C, so no connection is closed and reopened between requests
        limits = openai.DEFAULT_CONNECTION_LIMITS.__class__(max_connections=c, max_keepalive_connections=c)
        http_cls = openai.DefaultAioHttpClient if transport == "aiohttp" else openai.DefaultAsyncHttpxClient
        client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key="EMPTY",
            max_retries=0,
            timeout=timeout,
            http_client=http_cls(limits=limits, timeout=timeout),
        )
    sem = asyncio.Semaphore(c)
    ok = 0

    async def one(conv: Conversation) -> None:
        nonlocal ok
        async with sem:
            out = await client.chat.completions.create(model="stub", messages=conv, max_tokens=512, temperature=0.0)  # type: ignore[arg-type]
            ok += bool(out.choices[0].message.content)

    try:
        await asyncio.gather(*(one(conv) for conv in convs))
    finally:
        await client.close()
    return ok


def measure(run: Callable[[], int], requests: int) -> dict[str, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    ok = run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "requests": requests,
        "ok": ok,
        "rps": requests / wall,
        "cpu_ms": 1000 * cpu / requests,
    }


def run_variant(name: str, base_url: str, m: int, c: int) -> dict[str, float]:
    convs = conversations(m)
    warm = conversations(min(c, 64))
    if name == "raw-aiohttp":
        asyncio.run(raw_aiohttp(base_url, warm, c))
        return measure(lambda: asyncio.run(raw_aiohttp(base_url, convs, c)), m)
    if name in ("openai-default", "openai", "openai-aiohttp"):
        transport = {"openai-default": "default", "openai": "httpx", "openai-aiohttp": "aiohttp"}[name]
        asyncio.run(plain_openai(base_url, warm, c, transport))
        return measure(lambda: asyncio.run(plain_openai(base_url, convs, c, transport)), m)
    backend = OpenAIBackend("stub", base_url=base_url, max_concurrency=c, timeout=600)
    try:
        params = SamplingParams(max_new_tokens=512)
        backend.generate(warm, params)
        if name == "cerm-backend":
            return measure(lambda: sum(bool(o[0].text) for o in backend.generate(convs, params)), m)
        judge = Judge(backend, config=JudgeConfig(criteria_max_new_tokens=512, evaluation_max_new_tokens=512))
        responses = [f"Response {i}: a hash map stores key-value pairs." for i in range(m)]
        return measure(lambda: sum(j.score == 8.0 for j in judge.judge(QUERY, responses)), m + 1)
    finally:
        backend.close()


def llama_cpp_figure(max_tokens: int = 128, requests: int = 4) -> dict[str, Any]:
    """Generated tokens per second of llama.cpp's server on the embedded demo model (sequential requests)."""
    from cerm._embedded import demo_gguf_path

    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(demo_gguf_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(f"{base_url}/models", proc)
        backend = OpenAIBackend("demo", base_url=base_url, max_concurrency=4, timeout=600)
        try:
            convs = [
                [{"role": "user", "content": f"Write a short story about a robot number {i}."}] for i in range(requests)
            ]
            params = SamplingParams(max_new_tokens=max_tokens, temperature=0.7, seed=1)
            backend.generate(convs[:1], SamplingParams(max_new_tokens=8))
            t0 = time.perf_counter()
            out = backend.generate(convs, params)
            wall = time.perf_counter() - t0
        finally:
            backend.close()
        tokens = sum(o[0].completion_tokens for o in out)
        return {
            "requests": requests,
            "max_tokens": max_tokens,
            "completion_tokens": tokens,
            "wall_s": wall,
            "tokens_per_s": tokens / wall,
            "errors": sum(o[0].finish_reason == "error" for o in out),
        }
    finally:
        proc.terminate()
        proc.wait(15)


VARIANTS = ("raw-aiohttp", "openai-default", "openai", "openai-aiohttp", "cerm-backend", "cerm-judge")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=2048, help="requests per run")
    parser.add_argument("--c", type=int, nargs="+", default=[8, 64, 256], help="concurrency levels")
    parser.add_argument("--latency", type=float, default=0.2, help="stub server latency L in seconds")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell (the median is reported)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--llama-cpp", action="store_true", help="also measure llama.cpp's server tokens/s")
    parser.add_argument("--out", default=None, help="JSON output path (default: results/openai_backend.json)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.latency)
        return

    load_at_start = os.getloadavg()
    port = _free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency", str(args.latency)])
    base_url = f"http://127.0.0.1:{port}/v1"
    rows: list[dict[str, Any]] = []
    try:
        _wait_ready(f"{base_url}/models", server)
        header = f"{'C':>4} {'client':<15} {'req/s':>8} {'% ideal':>8} {'CPU ms/req':>11} {'wall s':>7} {'ok':>6}"
        print(header)
        print("-" * len(header))
        for c in args.c:
            ideal = min(c, args.m) / args.latency
            for name in args.variants:
                runs = [run_variant(name, base_url, args.m, c) for _ in range(args.repeats)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                row = {"C": c, "client": name, **med, "pct_ideal": 100 * med["rps"] / ideal, "runs": runs}
                rows.append(row)
                print(
                    f"{c:>4} {name:<15} {med['rps']:>8.1f} {row['pct_ideal']:>7.1f}% {med['cpu_ms']:>11.2f} "
                    f"{med['wall_s']:>7.2f} {int(med['ok']):>6}",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(15)
    llama = llama_cpp_figure() if args.llama_cpp else None
    if llama:
        print(
            f"llama.cpp server, demo model: {llama['tokens_per_s']:.1f} generated tokens/s "
            f"({llama['completion_tokens']} tokens in {llama['wall_s']:.1f} s, {llama['requests']} requests)"
        )
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / "openai_backend.json"
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": {
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "loadavg_at_start": load_at_start,
                    "loadavg_at_end": os.getloadavg(),
                },
                "args": {k: v for k, v in vars(args).items() if k != "serve"},
                "rows": rows,
                "llama_cpp": llama,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
