"""Best-of-N with an adaptive tie-break: extra judge samples only for the candidates tied at the top.

CE-RM writes integer or half-point scores, so candidates often tie. ``TieBreak`` first orders tied candidates by
their expected scores from the score tokens' probabilities (no extra generation, where the backend returns
log-probabilities), then gives the ones still tied more sampled chains, in rounds, up to ``max_chains``; a candidate
that was not tied is never judged again. ``result.tie_break`` says what each candidate got and why.

`python examples/best_of_n_tie_break.py` runs on the embedded demo judge, which rarely closes the format, so the
forced readout (marked as such) supplies its scores. Use --judge PKU-ONELab/CE-RM-4B for real selection.
"""
# ci: --judge-tokens 8 --max-chains 2
# ci-expect: best_index=
# ci-expect: chains=

from __future__ import annotations

import argparse

from cerm import Judge, JudgeConfig, TieBreak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", default="demo")
    parser.add_argument("--judge-tokens", type=int, default=64)
    parser.add_argument("--max-chains", type=int, default=4)
    args = parser.parse_args()

    query = "What is the capital of Australia?"
    candidates = [
        "The capital of Australia is Sydney.",
        "Canberra is the capital of Australia.",
        "Australia's capital city is Canberra, chosen as a compromise between Sydney and Melbourne.",
    ]
    config = JudgeConfig(
        criteria_max_new_tokens=args.judge_tokens,
        evaluation_max_new_tokens=args.judge_tokens,
        forced_readout=args.judge == "demo",  # the demo judge needs the forced readout to give numbers
        seed=0,
    )
    with Judge(args.judge, config=config) as judge:
        result = judge.best_of_n(query, candidates, tie_break=TieBreak(max_chains=args.max_chains))
    report = result.tie_break
    assert report is not None
    for entry in report.candidates:
        judgment = result.judgments[entry.index]
        print(
            f"[{entry.index}] first={entry.first_score} score={judgment.score} key={entry.key} "
            f"chains={entry.chains} (+{entry.added}) source={judgment.score_source}\n    {entry.reason}"
        )
    print(f"best_index={result.best_index}  order={list(report.order)}  rounds={report.rounds} ({report.stopped})")
    spent = f"{report.generations} extra generations ({report.usage.total_tokens} tokens)"
    print(f"expected score used first: {report.expected_used}; {spent}")


if __name__ == "__main__":
    main()
