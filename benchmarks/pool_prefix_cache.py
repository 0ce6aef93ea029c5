"""Query affinity in the endpoint pool, measured by vLLM's own prefix-cache counters.

The openai backend's pool (``base_urls=[...]``) sends every request of one query (its criteria turn and its
evaluations share the first message) to the same server when that server is not much busier than the others, so the
server's prefix cache already holds the criteria prompt, and after the first evaluation the criteria turn, when the
other evaluations arrive. This script measures what that buys on real servers: it starts S ``vllm serve`` processes
(vLLM's CPU build, the embedded untrained demo model ``demo-base``, prefix caching on, one OpenMP thread each on its
own core), scores the same workload (Q queries x N responses, greedy, short budgets) through
``Judge(name, backend="openai", base_urls=[...])`` with query affinity (the default) and without it
(``affinity=False``: fewest in flight only), and reads each server's Prometheus counters before and after each run:
``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits`` (prompt tokens looked up in, and found in, the prefix
cache), prompt tokens computed locally, requests served. The prefix caches are emptied (``POST /reset_prefix_cache``,
vLLM's dev mode) before every run; each configuration runs ``--repeats`` times, alternating which goes first.

Run it in the vLLM venv (``make venv-vllm``):

    PYTHONPATH=src .venv-vllm/bin/python benchmarks/pool_prefix_cache.py                    # 2 servers, 12 x 4
    PYTHONPATH=src .venv-vllm/bin/python benchmarks/pool_prefix_cache.py --repeats 2 --queries 8

Prints a table and writes ``benchmarks/results/pool_prefix_cache.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _vllm_servers import VLLMServer, metrics, reset_prefix_cache, vllm_server  # noqa: E402

SERVED_NAME = "demo-base"
CONFIGS = {"affinity": True, "no-affinity": False}
# vLLM's counter names (Prometheus adds _total to counters); the "{label}" form selects one label's share.
COUNTERS = {
    "requests": "vllm:request_success_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "computed_tokens": 'vllm:prompt_tokens_by_source_total{source="local_compute"}',
    "prefix_queries": "vllm:prefix_cache_queries_total",
    "prefix_hits": "vllm:prefix_cache_hits_total",
    "generated_tokens": "vllm:generation_tokens_total",
}
REQUIRED = ("prefix_queries", "prefix_hits")

QUERIES = [
    "Explain what a hash map is and when you would use one.",
    "Give advice to someone learning to cook for the first time.",
    "Why is the sky blue? Answer for a curious ten-year-old.",
    "Compare renting and buying a home in a few sentences.",
    "What should I pack for a three-day hiking trip?",
    "How do vaccines train the immune system?",
    "Write a polite email declining a meeting invitation.",
    "What is the difference between a list and a tuple in Python?",
    "Suggest three ways to save money on groceries.",
    "Summarise the causes of the French Revolution briefly.",
    "How can I get better at remembering people's names?",
    "Explain compound interest with a simple example.",
    "What makes a good cover letter?",
    "Why do cats purr?",
    "How does a refrigerator keep food cold?",
    "Give tips for a first job interview.",
]
OPENINGS = ["In short,", "Put simply,", "Here is my answer:", "Well,", "To be clear,", "Briefly,"]
BODIES = [
    "it depends on what you need, but the usual choice is the simplest one that works",
    "there are a few ideas to keep in mind, and the most important is to start small",
    "the key point is that each part has one job and does it well",
    "most people find it easier once they see a concrete example worked through",
]


def workload(queries: int, responses: int) -> list[tuple[str, list[str]]]:
    if queries > len(QUERIES):
        raise SystemExit(f"--queries at most {len(QUERIES)}")
    items = []
    for q in range(queries):
        answers = [
            f"{OPENINGS[(q + i) % len(OPENINGS)]} {BODIES[(q + 2 * i) % len(BODIES)]}. Option {i + 1}."
            for i in range(responses)
        ]
        items.append((QUERIES[q], answers))
    return items


def counters(server: VLLMServer) -> dict[str, float]:
    samples = metrics(server.root)
    missing = [COUNTERS[k] for k in REQUIRED if COUNTERS[k] not in samples]
    if missing:
        names = sorted({n.split("{")[0] for n in samples if "prefix" in n or "prompt" in n})
        raise SystemExit(f"this vLLM exposes none of {missing}; its prefix/prompt counters are {names}")
    return {key: samples.get(name, 0.0) for key, name in COUNTERS.items()}


def warm_up(server: VLLMServer) -> None:
    """One tiny request, so first-call costs (allocations, lazy kernels) stay out of the measured runs."""
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2}
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as answer:
        json.load(answer)


def run_config(
    config: str, servers: list[VLLMServer], items: list[tuple[str, list[str]]], args: argparse.Namespace
) -> dict[str, Any]:
    from cerm import Judge, JudgeConfig

    for server in servers:
        reset_prefix_cache(server.root)
    before = [counters(s) for s in servers]
    judge_config = JudgeConfig(
        criteria_max_new_tokens=args.criteria_max_new_tokens,
        evaluation_max_new_tokens=args.evaluation_max_new_tokens,
    )
    with Judge(
        SERVED_NAME,
        backend="openai",
        base_urls=[s.base_url for s in servers],
        api_key="sk-local",
        affinity=CONFIGS[config],
        max_concurrency=args.max_concurrency,
        timeout=1800.0,
        config=judge_config,
    ) as judge:
        t0 = time.perf_counter()
        batch = judge.judge_batch(items)
        wall = time.perf_counter() - t0
        pool = judge.backend.describe()["endpoints"]
    after = [counters(s) for s in servers]
    per_server = []
    for endpoint, b, a in zip(pool, before, after, strict=True):
        delta = {key: a[key] - b[key] for key in COUNTERS}
        delta["client_requests"] = endpoint["requests"]
        delta["affinity_hits"] = endpoint["affinity_hits"]
        per_server.append(delta)
    total = {key: sum(s[key] for s in per_server) for key in per_server[0]}
    statuses: dict[str, int] = {}
    for judgments in batch:
        for j in judgments:
            statuses[j.status.value] = statuses.get(j.status.value, 0) + 1
    return {
        "config": config,
        "wall_s": wall,
        "per_server": per_server,
        "total": total,
        "hit_rate": total["prefix_hits"] / total["prefix_queries"] if total["prefix_queries"] else 0.0,
        "statuses": statuses,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| configuration | repeat | requests per server | prefix-cache queried tokens | hit tokens | hit rate "
        "| prompt tokens computed | wall s |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for row in rows:
        t = row["total"]
        per = ", ".join(f"{s['client_requests']:.0f}" for s in row["per_server"])
        print(
            f"| {row['config']} | {row['repeat']} | {per} | {t['prefix_queries']:.0f} | {t['prefix_hits']:.0f} | "
            f"{100 * row['hit_rate']:.1f}% | {t['computed_tokens']:.0f} | {row['wall_s']:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--responses", type=int, default=4, help="responses per query")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each configuration (order alternates)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--criteria-max-new-tokens", type=int, default=32)
    parser.add_argument("--evaluation-max-new-tokens", type=int, default=16)
    parser.add_argument("--max-concurrency", type=int, default=64, help="requests in flight (backend default)")
    parser.add_argument("--kv-cache-gib", type=float, default=0.25, help="KV cache of each server")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--block-size", type=int, help="KV block size in tokens (default: vLLM's, 128 on CPU)")
    parser.add_argument(
        "--bind",
        choices=("cores", "default"),
        default="cores",
        help="cores: server i runs one OpenMP thread on core i mod CPUs; default: vLLM's own choice",
    )
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "pool_prefix_cache.json")
    args = parser.parse_args(argv)

    from cerm._embedded import demo_model_path

    model = demo_model_path()  # the untrained base, converted once into a safetensors folder (no download)
    items = workload(args.queries, args.responses)
    cpus = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        log_dir = args.log_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        log_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        servers = [
            stack.enter_context(
                vllm_server(
                    model,
                    served_name=SERVED_NAME,
                    cpu_bind=str(i % cpus) if args.bind == "cores" else None,
                    kv_cache_gib=args.kv_cache_gib,
                    max_model_len=args.max_model_len,
                    block_size=args.block_size,
                    log_path=log_dir / f"server{i}.log",
                )
            )
            for i in range(args.servers)
        ]
        startup = time.perf_counter() - started
        print(f"# {len(servers)} servers up in {startup:.0f} s", file=sys.stderr, flush=True)
        for server in servers:
            warm_up(server)
        for repeat in range(args.repeats):
            order = args.configs if repeat % 2 == 0 else list(reversed(args.configs))
            for config in order:
                row = run_config(config, servers, items, args)
                row["repeat"] = repeat
                rows.append(row)
                print(
                    f"# {config} repeat {repeat}: {row['wall_s']:.1f} s, hit rate {100 * row['hit_rate']:.1f}%",
                    file=sys.stderr,
                    flush=True,
                )
    print_table(rows)
    import vllm

    record = {
        "benchmark": "pool_prefix_cache",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *(argv if argv is not None else sys.argv)]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": cpus,
            "load_average": os.getloadavg(),
            "vllm": vllm.__version__,
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "server_startup_s": startup,
        "runs": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
