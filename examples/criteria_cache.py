"""A criteria cache: the criteria turn is generated once per query and reused by re-runs, even across processes.

    python examples/criteria_cache.py                      # demo judge, a cache file in a temporary folder
    python examples/criteria_cache.py 64 32 /tmp/crit.db   # criteria / evaluation budgets, cache file

The first run generates criteria and stores them; the second run (here: a second Judge on the same file, as a new
process would) finds them and only runs the evaluations. Do not cache when you want fresh criteria samples (RL
training of the judge itself) or while the weights change under the same model name.
"""
# ci: 24 8 {tmp}/crit.sqlite
# ci-expect: criteria from cache: False
# ci-expect: criteria from cache: True, criteria tokens generated: 0, cache hits/misses: 1/0
# ci: 24 8

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from cerm import Judge, JudgeConfig, SQLiteCriteriaCache
from cerm.backends import create_backend


def main() -> None:
    criteria_tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    evaluation_tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    folder = tempfile.mkdtemp(prefix="cerm-cache-")
    path = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(folder) / "criteria.sqlite"
    config = JudgeConfig(criteria_max_new_tokens=criteria_tokens, evaluation_max_new_tokens=evaluation_tokens)
    query = "Give one tip for writing clear emails."
    responses = ["Put the request in the first sentence.", "Use many long paragraphs."]

    backend = create_backend("hf", os.environ.get("CERM_MODEL", "demo"))
    with backend:
        for run in (1, 2):
            cache = SQLiteCriteriaCache(path)  # a fresh handle on the same file, as a restarted process would open
            start = time.perf_counter()
            with Judge(backend, config=config, cache=cache) as judge:
                judgments = judge.judge(query, responses)
            seconds = time.perf_counter() - start
            first = judgments[0]
            print(
                f"run {run}: {seconds:.1f} s, criteria from cache: {first.provenance.criteria_cached}, "
                f"criteria tokens generated: {first.provenance.criteria_usage.completion_tokens}, "
                f"cache hits/misses: {cache.hits}/{cache.misses}, entries in {path.name}: {len(cache)}"
            )
            cache.close()
        print(f"criteria (first 120 chars): {first.criteria.text[:120]!r}")  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
