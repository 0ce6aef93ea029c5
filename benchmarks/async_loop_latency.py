"""Does ``Judge.ajudge`` block the caller's event loop? Ping latency of a server in the same loop during a judgment.

A tiny asyncio TCP echo server on 127.0.0.1 and a client pinging it (one ping every millisecond) share one event
loop with a 256-response ``ajudge``. Whatever the Judge does on that loop (prompt rendering, tokenization for the
context budget, criteria cache I/O, parsing) delays the pings; work done in worker threads does not (beyond the
GIL's switching interval).

The backend is scripted for generation (instant, realistic CE-RM texts: no model runs, so what is measured is the
Judge's own work) but counts tokens with the embedded demo model's real tokenizer and chat template
(SmolLM2-135M-Instruct, context 8192), so the Judge computes the real response budget for every evaluation prompt.
The criteria go through an SQLite criteria cache (a fresh file, so one miss and one write).

Run it once per version of the code and compare (``PYTHONPATH`` picks the version):

    PYTHONPATH=src python benchmarks/async_loop_latency.py --label after
    PYTHONPATH=/path/to/old/src python benchmarks/async_loop_latency.py --label before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cerm
from cerm import Judge, JudgeConfig, SQLiteCriteriaCache
from cerm._embedded import demo_model_path
from cerm.backends import Backend, Completion, SamplingParams
from cerm.protocol import Conversation

RESULTS = Path(__file__).resolve().parent / "results"
QUERY = "Explain why the sky is blue, in a way a curious ten-year-old would understand."
CRITERIA = (
    "The query asks for a child-friendly explanation of Rayleigh scattering.\n\n[Start of Criteria]\n"
    "1. Correctness: The explanation is physically right (sunlight has all colours; blue scatters most).\n"
    "2. Accessibility: A ten-year-old can follow it; jargon is explained or avoided.\n"
    "3. Engagement: It uses an example or image that makes the idea stick.\n[End of Criteria]"
)
EVALUATION = (
    "**1. Correctness:** Right. $\\boxed{4}$\n\n**2. Accessibility:** Clear. $\\boxed{4}$\n\n"
    "**3. Engagement:** A good image. $\\boxed{3}$\n\n**Overall:** Overall quality score: $\\boxed{7}$"
)


class TokenizerScriptedBackend(Backend):
    """Instant scripted CE-RM texts; token counts from the demo model's real tokenizer and chat template."""

    name = "scripted-with-real-tokenizer"

    def __init__(self) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(demo_model_path()))

    @property
    def model_id(self) -> str:
        return "scripted (SmolLM2-135M-Instruct tokenizer)"

    @property
    def context_length(self) -> int | None:
        return 8192

    def count_tokens(self, text: str) -> int | None:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_conversation_tokens(self, conversation: Conversation) -> int | None:
        rendered = self.tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)
        return self.count_tokens(str(rendered))

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        text = CRITERIA if len(conversations[0]) == 1 else EVALUATION
        return [[Completion(text, "stop", 0, 10)] * params.n for _ in conversations]


def responses(count: int) -> list[str]:
    body = (
        "Sunlight looks white, but it is really a mix of every colour of the rainbow. When it enters the air, it "
        "bumps into tiny gas molecules. Blue light has short, choppy waves, so it gets bounced around the sky much "
        "more than red light, which has long, lazy waves. "
    )
    return [f"Answer {i}: " + body * (1 + i % 4) for i in range(count)]


async def measure(judge: Judge, items: list[str], interval: float) -> tuple[list[float], float]:
    handlers: list[asyncio.Task[None]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)  # awaited at the end, so the loop closes with no handler pending
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    done = asyncio.Event()

    async def pinger() -> None:
        while not done.is_set():
            sent = time.perf_counter()
            writer.write(b"ping\n")
            await writer.drain()
            await reader.readline()
            latencies.append(time.perf_counter() - sent)
            await asyncio.sleep(interval)

    task = asyncio.create_task(pinger())
    await asyncio.sleep(0.05)  # pings running before the judgment starts
    latencies.clear()
    started = time.perf_counter()
    judgments = await judge.ajudge(QUERY, items)
    elapsed = time.perf_counter() - started
    done.set()
    await task
    writer.close()
    await writer.wait_closed()
    await asyncio.gather(*handlers)
    server.close()
    await server.wait_closed()
    assert all(j.score == 7.0 for j in judgments), [j.reason for j in judgments if j.score != 7.0][:3]
    return latencies, elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--interval-ms", type=float, default=1.0)
    parser.add_argument("--label", default="current")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    backend = TokenizerScriptedBackend()
    items = responses(args.responses)
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            cache = SQLiteCriteriaCache(Path(folder) / "criteria.sqlite")
            judge = Judge(backend, config=JudgeConfig(), cache=cache)
            latencies, elapsed = asyncio.run(measure(judge, items, args.interval_ms / 1000))
            cache.close()
        ms = sorted(x * 1000 for x in latencies)
        run = {
            "repeat": repeat,
            "pings": len(ms),
            "median_ms": statistics.median(ms),
            "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "max_ms": ms[-1],
            "ajudge_s": elapsed,
        }
        runs.append(run)
        print(
            f"{args.label} run {repeat}: {run['pings']} pings, median {run['median_ms']:.2f} ms, "
            f"p99 {run['p99_ms']:.2f} ms, max {run['max_ms']:.2f} ms; ajudge {elapsed:.2f} s",
            flush=True,
        )
    summary = {key: statistics.median(r[key] for r in runs) for key in ("median_ms", "p99_ms", "max_ms", "ajudge_s")}
    print("\n| code | responses | pings/run | median ms | p99 ms | max ms | ajudge s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.label} | {args.responses} | {statistics.median(r['pings'] for r in runs):.0f} | "
        f"{summary['median_ms']:.2f} | {summary['p99_ms']:.2f} | {summary['max_ms']:.2f} | {summary['ajudge_s']:.2f} |"
    )
    out = args.out or RESULTS / f"async_loop_latency_{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "label": args.label,
        "cerm": str(Path(cerm.__file__).resolve().parent),
        "responses": args.responses,
        "interval_ms": args.interval_ms,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "runs": runs,
        "median_of_runs": summary,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
