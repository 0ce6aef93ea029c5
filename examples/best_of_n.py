"""Best-of-N: sample N answers from a policy, judge them under one criteria set, keep the best.

`python examples/best_of_n.py --n 3` uses the embedded demo model both as the policy (any cerm backend works, or a
plain function prompt -> list of N strings) and as the judge. The demo judge rarely writes a score: then no candidate
wins (best_index None) and every judgment says why. Use PKU-ONELab/CE-RM-4B as --judge for real selection.
"""
# ci: --n 2 --policy-tokens 8
# ci-expect: best_index=
# ci-expect: rerank: best_index=

from __future__ import annotations

import argparse

from cerm import Judge, JudgeConfig, SamplingParams, create_backend
from cerm.integrations import best_of_n, rerank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", default="demo")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--prompt", default="Give me one tip for writing clear code.")
    parser.add_argument("--policy-tokens", type=int, default=16)
    parser.add_argument("--judge-tokens", type=int, default=8)
    args = parser.parse_args()

    judge = Judge(
        args.judge,
        config=JudgeConfig(criteria_max_new_tokens=args.judge_tokens, evaluation_max_new_tokens=args.judge_tokens),
    )
    # Any cerm backend can be the policy; here the demo model (shared with the judge when the judge is the demo too).
    policy = judge.backend if args.judge == "demo" else create_backend("hf", "demo")
    result = best_of_n(
        policy,
        args.prompt,
        judge,
        n=args.n,
        sampling=SamplingParams(max_new_tokens=args.policy_tokens, temperature=1.0),
    )
    for ranked in result.ranking:
        j = ranked.judgment
        note = "" if j.scorable else f"(unscorable: {j.reason})"
        print(f"[{ranked.index}] score={j.score} {note}\n    {ranked.response!r}")
    print(f"best_index={result.best_index} best_score={result.best_score}")

    # Reranking candidates you already have (one judge_batch for all queries):
    reranked = rerank(judge, [("What is 2+2?", ["4", "5"])])[0]
    print(f"rerank: best_index={reranked.best_index}, scores={[j.score for j in reranked.judgments]}")
    judge.close()


if __name__ == "__main__":
    main()
