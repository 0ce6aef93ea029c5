"""Tie rates of the plain parsed score vs the expected score and the forced readout, on seeded LLMBar pairs.

One Judge run with ``score_readout="expected"`` and ``forced_readout=True`` gives every reading at once, because the
evaluation text is the same greedy text in every mode (asking for log-probabilities or appending a forced
continuation does not change it):

* ``parsed``: the plain protocol (the default Judge): the last boxed value the judge wrote, else UNSCORABLE;
* ``expected``: the expectation at that box where the judge closed the format (parsed value kept when the
  log-probabilities cover too little mass), else UNSCORABLE;
* ``forced_parsed``: parsed where closed, else the value the judge writes after the forced overall-score prefix;
* ``forced_expected``: expected where closed, else the expectation after the forced prefix (UNSCORABLE below the mass
  threshold).

For each reading: pairs where both sides are scored, ties among them, the tie rate, and the accuracy (chosen strictly
above rejected) among scored pairs. The criteria turn goes through a criteria cache, so a second run with the same
settings only re-runs the evaluations.

    PYTHONPATH=src python benchmarks/score_ties.py --pairs 30 --seed 0 --criteria-max-new-tokens 48 \
        --evaluation-max-new-tokens 48
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from cerm import Chain, Judge, JudgeConfig, SQLiteCriteriaCache
from cerm._embedded import cache_dir

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmbar" / "all.jsonl"
RESULTS = Path(__file__).resolve().parent / "results"
READINGS = ("parsed", "expected", "forced_parsed", "forced_expected")


def load_pairs(path: Path, count: int, seed: int, max_chars: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # The LLMBar test sets proper (adversarial + natural), short enough for a CPU run.
    rows = [
        r
        for r in rows
        if r["category"] in ("adversarial", "natural")
        and len(r["prompt"]) + len(r["chosen"]) + len(r["rejected"][0]) <= max_chars
    ]
    rows.sort(key=lambda r: r["id"])
    return random.Random(seed).sample(rows, count)


def readings(chain: Chain) -> dict[str, float | None]:
    closed = chain.score_source in ("parsed", "expected")
    parsed = chain.evaluation.overall if closed and chain.evaluation is not None else None
    forced_written = chain.readout.greedy if chain.readout is not None and chain.readout.method == "forced" else None
    return {
        "parsed": parsed,
        "expected": chain.score if closed else None,
        "forced_parsed": parsed if parsed is not None else forced_written,
        "forced_expected": chain.score,
    }


def summarise(pairs: list[tuple[dict[str, float | None], dict[str, float | None]]]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for name in READINGS:
        scored = [(c[name], r[name]) for c, r in pairs if c[name] is not None and r[name] is not None]
        ties = sum(1 for c, r in scored if c == r)
        wins = sum(1 for c, r in scored if c is not None and r is not None and c > r)
        table[name] = {
            "pairs": len(pairs),
            "scored_pairs": len(scored),
            "ties": ties,
            "tie_rate": ties / len(scored) if scored else None,
            "accuracy_scored": wins / len(scored) if scored else None,
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-chars", type=int, default=2000, help="skip pairs longer than this (prompt + both)")
    parser.add_argument(
        "--limit", type=int, default=None, help="judge only the first N of the seeded sample (its criteria stay cached)"
    )
    parser.add_argument("--criteria-max-new-tokens", type=int, default=48)
    parser.add_argument("--evaluation-max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=cache_dir() / "criteria" / "score_ties.sqlite")
    parser.add_argument("--output", type=Path, default=RESULTS / "score_ties.json")
    args = parser.parse_args(argv)

    pairs = load_pairs(args.data, args.pairs, args.seed, args.max_chars)[: args.limit]
    config = JudgeConfig(
        criteria_max_new_tokens=args.criteria_max_new_tokens,
        evaluation_max_new_tokens=args.evaluation_max_new_tokens,
        score_readout="expected",
        forced_readout=True,
    )
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with Judge(args.model, config=config, cache=SQLiteCriteriaCache(args.cache), batch_size=args.batch_size) as judge:
        judged = judge.judge_batch([(p["prompt"], [p["chosen"], p["rejected"][0]]) for p in pairs])
        cached = sum(1 for row in judged if row[0].provenance.criteria_cached)
        model_id = judge.backend.model_id
    seconds = time.perf_counter() - start

    per_pair = [(readings(row[0].chains[0]), readings(row[1].chains[0])) for row in judged]
    table = summarise(per_pair)
    masses = [
        ch.readout.mass
        for row in judged
        for j in row
        for ch in j.chains
        if ch.readout is not None and ch.readout.trusted
    ]

    print(f"{len(pairs)} LLMBar pairs (seed {args.seed}), model {model_id}, {seconds:.0f} s, criteria cached: {cached}")
    print(f"{'reading':<16} {'scored pairs':>12} {'ties':>5} {'tie rate':>9} {'accuracy':>9}")
    for name, row in table.items():
        rate = "-" if row["tie_rate"] is None else f"{row['tie_rate']:.1%}"
        acc = "-" if row["accuracy_scored"] is None else f"{row['accuracy_scored']:.1%}"
        print(f"{name:<16} {row['scored_pairs']:>12} {row['ties']:>5} {rate:>9} {acc:>9}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "score_ties",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "command": " ".join(sys.argv),
        "model": model_id,
        "pair_ids": [p["id"] for p in pairs],
        "config": {k: v for k, v in vars(args).items() if k not in ("data", "cache", "output")},
        "seconds": seconds,
        "criteria_cached_queries": cached,
        "median_trusted_mass": sorted(masses)[len(masses) // 2] if masses else None,
        "table": table,
        "per_pair": per_pair,
    }
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
