"""Judge throughput on one query: batched scoring versus one evaluation call at a time.

For N in {1, 4, 8} responses to one query:
  sequential    1 criteria generation, then each evaluation in its own backend call (Judge.evaluate in a loop);
  batched-full  Judge.judge(query, responses): 1 criteria generation, then all N evaluations in one backend batch,
                every row prefilled in full (HFBackend(share_prefix=False));
  batched       the same batch with shared-prefix prefill (the default): the ~500 prompt tokens the N evaluation
                prompts share are computed once.
All modes generate the same text from the same prompts (greedy, same token budgets). A lone row has nothing to share,
so sequential is the same with either backend setting. Each cell is the median of --repeats runs. Prints a table and
writes JSON to benchmarks/results/judge_throughput.json.

    python benchmarks/judge_throughput.py                       # embedded demo model, CPU
    python benchmarks/judge_throughput.py --repeats 3 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cerm import Judge, JudgeConfig
from cerm.backends import InstrumentedBackend

QUERY = "Explain why the sky is blue in two or three sentences for a curious ten-year-old."
RESPONSES = [
    "Sunlight has all colours. Air scatters blue light much more than red, so blue comes at us from every direction.",
    "The sky is blue because it reflects the ocean.",
    "Light from the Sun bounces off tiny air molecules; short blue waves bounce around the most, painting the sky.",
    "Because of Rayleigh scattering, which goes as one over wavelength to the fourth power.",
    "Blue is the sky's favourite colour.",
    "Air molecules scatter short wavelengths strongly. Blue is short, so the whole sky glows blue in daytime.",
    "At sunset the sky is red, so it is not always blue.",
    "Tiny bits of air knock blue light around more than other colours, so you see blue everywhere you look.",
]


MODES = ("sequential", "batched-full", "batched")


def run_once(judge: Judge, counter: InstrumentedBackend, n: int, mode: str) -> dict[str, float]:
    responses = RESPONSES[:n]
    counter.reset()
    start = time.perf_counter()
    if mode.startswith("batched"):
        judge.judge(QUERY, responses)
    else:
        criteria = judge.criteria(QUERY)
        for response in responses:
            judge.evaluate(QUERY, criteria, response)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "generated_tokens": counter.completion_tokens, "backend_calls": len(counter.calls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "judge_throughput.json"))
    args = parser.parse_args()

    from cerm.backends import HFBackend

    inner = HFBackend(args.model, batch_size=max(args.sizes))
    inner_full = HFBackend(args.model, batch_size=max(args.sizes), share_prefix=False)
    counter, counter_full = InstrumentedBackend(inner), InstrumentedBackend(inner_full)
    config = JudgeConfig(criteria_max_new_tokens=args.max_new_tokens, evaluation_max_new_tokens=args.max_new_tokens)
    judge, judge_full = Judge(counter, config=config), Judge(counter_full, config=config)
    for warm_judge, warm_counter in ((judge, counter), (judge_full, counter_full)):
        run_once(warm_judge, warm_counter, 2, "batched")  # warm-up: first-call allocations and kernel selection

    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        for mode in MODES:
            mode_judge, mode_counter = (judge_full, counter_full) if mode == "batched-full" else (judge, counter)
            runs = [run_once(mode_judge, mode_counter, n, mode) for _ in range(args.repeats)]
            wall = statistics.median(r["wall_s"] for r in runs)
            tokens = statistics.median(r["generated_tokens"] for r in runs)
            rows.append(
                {
                    "n": n,
                    "mode": mode,
                    "wall_s": wall,
                    "generated_tokens": tokens,
                    "backend_calls": runs[0]["backend_calls"],
                    "responses_per_s": n / wall,
                    "tokens_per_s": tokens / wall,
                    "runs_wall_s": [r["wall_s"] for r in runs],
                }
            )
    by = {(r["n"], r["mode"]): r for r in rows}
    print(f"{'N':>3} {'mode':>12} {'calls':>5} {'gen tok':>8} {'wall s':>8} {'resp/s':>7} {'tok/s':>7} {'speedup':>8}")
    for r in rows:
        speedup = r["responses_per_s"] / by[(r["n"], "sequential")]["responses_per_s"]
        r["speedup_vs_sequential"] = speedup
        print(
            f"{r['n']:>3} {r['mode']:>12} {r['backend_calls']:>5} {r['generated_tokens']:>8.0f} {r['wall_s']:>8.2f} "
            f"{r['responses_per_s']:>7.3f} {r['tokens_per_s']:>7.1f} {speedup:>7.2f}x"
        )
    result = {
        "benchmark": "judge_throughput",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores",
        "model": inner.model_id,
        "backend": inner.describe(),
        "backend_full_prefill": inner_full.describe(),
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    inner.close()
    inner_full.close()


if __name__ == "__main__":
    main()
