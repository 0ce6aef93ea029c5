"""Prefix caching on vLLM for CE-RM: N responses per query share one long prompt prefix; is it computed once?

Scores N = 8 and N = 32 responses per query with the same Judge on three backends: vLLM with prefix caching on, vLLM
with it off, and the Hugging Face backend. For each call it records the prompt tokens submitted and the prompt
tokens the engine actually computed (vLLM's own counters), the wall time and responses per second. From the N = 8 and
N = 32 calls it derives the time per extra response, and compares it with the same response's generation alone: a
second, warm pass over the same prompts, where every prompt is already cached and only the response's own decoding
is left.

Run it in the vLLM venv (``make venv-vllm``); each configuration runs in its own process (one vLLM engine per
process), so the whole run starts two engines:

    PYTHONPATH=src .venv-vllm/bin/python benchmarks/vllm_prefix.py            # N = 8 and 32, 3 repeats each
    PYTHONPATH=src .venv-vllm/bin/python benchmarks/vllm_prefix.py --repeats 1 --ns 8

Prints a table and writes ``benchmarks/results/vllm_prefix.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS = ("vllm-cache-on", "vllm-cache-off", "hf")
QUERIES = [
    "Explain what a hash map is and when you would use one.",
    "Give advice to someone learning to cook for the first time.",
    "Why is the sky blue? Answer for a curious ten-year-old.",
    "Compare renting and buying a home in a few sentences.",
]
OPENINGS = ["In short,", "Put simply,", "Here is my answer:", "Well,", "To be clear,", "Briefly,", "First,", "Sure!"]
BODIES = [
    "it depends on what you need, but the usual choice is the simplest one that works",
    "there are a few ideas to keep in mind, and the most important is to start small",
    "the key point is that each part has one job and does it well",
    "most people find it easier once they see a concrete example worked through",
]


def responses(n: int, seed: int) -> list[str]:
    """N distinct, plausible answers of 40-60 tokens (their own tokens are what a warm cache cannot skip)."""
    out = []
    for i in range(n):
        opening = OPENINGS[(i + seed) % len(OPENINGS)]
        body = BODIES[(i // len(OPENINGS) + seed) % len(BODIES)]
        out.append(f"{opening} {body}. Option {i + 1}: think it through step {i % 5 + 1} by step, then check it.")
    return out


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def run_config(config: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """All measurements of one backend configuration, in this process."""
    from cerm import Judge, JudgeConfig

    started = time.perf_counter()
    backend: Any
    if config == "hf":
        import torch

        from cerm.backends.hf import HFBackend

        # vLLM's CPU engine runs its model on one OpenMP thread (it keeps a core for itself); give hf the same, which
        # also spares it the spin-wait collapse of two OpenMP threads on a busy machine.
        torch.set_num_threads(args.hf_threads)
        backend = HFBackend("demo", batch_size=args.hf_batch_size)
    else:
        from cerm.backends.vllm import VLLMBackend

        backend = VLLMBackend(
            "demo",
            dtype="bfloat16",
            max_model_len=args.max_model_len,
            enforce_eager=True,
            kv_cache_memory_bytes=args.kv_cache_mib * 2**20,
            enable_prefix_caching=config == "vllm-cache-on",
        )
    startup = time.perf_counter() - started
    judge = Judge(
        backend,
        config=JudgeConfig(
            criteria_max_new_tokens=args.criteria_max_new_tokens,
            evaluation_max_new_tokens=args.evaluation_max_new_tokens,
        ),
    )
    is_vllm = config != "hf"
    judge.judge("Warm-up: say hi.", ["hi", "hello"])  # first-call costs (allocations, lazy kernels) excluded

    rows = []
    repeats = args.hf_repeats if config == "hf" and args.hf_repeats else args.repeats
    for n in args.ns:
        for repeat in range(repeats):
            query, answers = QUERIES[repeat % len(QUERIES)], responses(n, repeat)
            for phase in ("cold", "warm") if is_vllm and config == "vllm-cache-on" else ("cold",):
                if is_vllm and phase == "cold":
                    backend.reset_prefix_cache()  # each measured query starts with nothing cached
                before = backend.engine_stats() if is_vllm else None
                t0 = time.perf_counter()
                judgments = judge.judge(query, answers)
                wall = time.perf_counter() - t0
                prov = judgments[0].provenance
                submitted = prov.criteria_usage.prompt_tokens + sum(
                    j.provenance.evaluation_usage.prompt_tokens for j in judgments
                )
                generated = prov.criteria_usage.completion_tokens + sum(
                    j.provenance.evaluation_usage.completion_tokens for j in judgments
                )
                row = {
                    "config": config,
                    "n": n,
                    "repeat": repeat,
                    "phase": phase,
                    "wall_s": wall,
                    "responses_per_s": n / wall,
                    "prompt_tokens": submitted,
                    "prompt_tokens_computed": submitted,  # hf computes every prompt token
                    "generated_tokens": generated,
                    "scored": sum(j.score is not None for j in judgments),
                }
                if before is not None:
                    after = backend.engine_stats()
                    row["prompt_tokens"] = after["prompt_tokens"] - before["prompt_tokens"]
                    row["prompt_tokens_computed"] = after["prompt_tokens_computed"] - before["prompt_tokens_computed"]
                    row["prefix_cache_hits"] = after["prefix_cache_hits"] - before["prefix_cache_hits"]
                    row["generated_tokens"] = after["generation_tokens"] - before["generation_tokens"]
                rows.append(row)
                print(f"# {config} n={n} repeat={repeat} {phase}: {wall:.1f}s", file=sys.stderr, flush=True)
    for row in rows:
        row["startup_s"] = startup
    backend.close()
    return rows


def summarize(rows: list[dict[str, Any]], ns: list[int]) -> list[dict[str, Any]]:
    table = []
    keys = sorted({(r["config"], r["phase"]) for r in rows}, key=lambda k: (CONFIGS.index(k[0]), k[1]))
    for config, phase in keys:
        for n in ns:
            sel = [r for r in rows if r["config"] == config and r["phase"] == phase and r["n"] == n]
            if not sel:
                continue
            table.append(
                {
                    "config": config,
                    "phase": phase,
                    "n": n,
                    "runs": len(sel),
                    "prompt_tokens": statistics.median(r["prompt_tokens"] for r in sel),
                    "prompt_tokens_computed": statistics.median(r["prompt_tokens_computed"] for r in sel),
                    "generated_tokens": statistics.median(r["generated_tokens"] for r in sel),
                    "wall_s": statistics.median(r["wall_s"] for r in sel),
                    "responses_per_s": statistics.median(r["responses_per_s"] for r in sel),
                }
            )
    return table


def extra_response_costs(table: list[dict[str, Any]], ns: list[int]) -> dict[str, dict[str, float]]:
    """Per configuration: seconds and computed prompt tokens per response beyond the smallest N."""
    if len(ns) < 2:
        return {}
    low, high = min(ns), max(ns)
    out = {}
    for config, phase in sorted({(t["config"], t["phase"]) for t in table}):
        by_n = {t["n"]: t for t in table if t["config"] == config and t["phase"] == phase}
        if low in by_n and high in by_n:
            extra = high - low
            out[f"{config}/{phase}"] = {
                "s_per_extra_response": (by_n[high]["wall_s"] - by_n[low]["wall_s"]) / extra,
                "computed_prompt_tokens_per_extra_response": (
                    by_n[high]["prompt_tokens_computed"] - by_n[low]["prompt_tokens_computed"]
                )
                / extra,
            }
    return out


def print_table(table: list[dict[str, Any]], extras: dict[str, dict[str, float]]) -> None:
    header = f"{'config':<16}{'phase':<6}{'N':>4}{'prompt tok':>12}{'computed':>10}{'gen tok':>9}"
    header += f"{'wall s':>9}{'resp/s':>8}"
    print(header)
    print("-" * len(header))
    for t in table:
        print(
            f"{t['config']:<16}{t['phase']:<6}{t['n']:>4}{t['prompt_tokens']:>12.0f}{t['prompt_tokens_computed']:>10.0f}"
            f"{t['generated_tokens']:>9.0f}{t['wall_s']:>9.1f}{t['responses_per_s']:>8.2f}"
        )
    if extras:
        print()
        print(f"{'per extra response':<28}{'seconds':>9}{'computed prompt tokens':>24}")
        for name, e in extras.items():
            print(f"{name:<28}{e['s_per_extra_response']:>9.2f}{e['computed_prompt_tokens_per_extra_response']:>24.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", type=int, nargs="+", default=[8, 32], help="responses per query")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hf-repeats", type=int, help="repeats for the hf configuration (default: --repeats)")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--criteria-max-new-tokens", type=int, default=96)
    parser.add_argument("--evaluation-max-new-tokens", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--kv-cache-mib", type=int, default=1024)
    parser.add_argument("--hf-batch-size", type=int, default=8)
    parser.add_argument("--hf-threads", type=int, default=1, help="torch threads for hf (vLLM's CPU engine uses 1)")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a configuration's rows saved by an earlier run with these settings"
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "vllm_prefix.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one configuration, write rows here
    args = parser.parse_args(argv)

    if args.child:
        (config,) = args.configs
        Path(args.child).write_text(json.dumps(run_config(config, args)))
        return 0

    rows: list[dict[str, Any]] = []
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "child", "configs", "reuse")}
    for config in args.configs:
        # Each configuration's rows are kept beside the output, so an interrupted run can go on with --reuse.
        part = args.output.with_suffix(f".{config}.json")
        if args.reuse and part.is_file():
            saved = json.loads(part.read_text())
            if saved["settings"] == settings:
                rows.extend(saved["rows"])
                continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            out = handle.name
        given = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--reuse"]
        cmd = [sys.executable, __file__, *given, "--configs", config, "--child", out]
        # One process per configuration: vLLM keeps one engine per process, and the runs must not share caches.
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            print(f"configuration {config} failed (exit {done.returncode}); see its output above", file=sys.stderr)
            return done.returncode
        config_rows = json.loads(Path(out).read_text())
        os.unlink(out)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(json.dumps({"settings": settings, "rows": config_rows}, indent=1) + "\n")
        rows.extend(config_rows)

    table = summarize(rows, args.ns)
    extras = extra_response_costs(table, args.ns)
    print_table(table, extras)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "vllm_prefix",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": _machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "child")},
        "summary": table,
        "per_extra_response": extras,
        "runs": rows,
    }
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
