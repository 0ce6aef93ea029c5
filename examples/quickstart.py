"""Quickstart: score two answers with a CE-RM judge and look at the rich judgments.

    python examples/quickstart.py                                   # embedded tiny demo judge
    python examples/quickstart.py --model PKU-ONELab/CE-RM-4B       # the released judge (GPU recommended)

The demo judge is a 135M model that rarely writes the CE-RM format, so expect UNSCORABLE judgments with reasons:
that is cerm being honest, not a failure of the example.
"""
# ci: --max-new-tokens 16

from __future__ import annotations

import argparse

from cerm import Judge, JudgeConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()

    config = JudgeConfig(criteria_max_new_tokens=args.max_new_tokens, evaluation_max_new_tokens=args.max_new_tokens)
    query = "What is the boiling point of water at sea level, in Celsius?"
    responses = ["Water boils at 100 degrees Celsius at sea level.", "About 50 degrees Celsius."]

    with Judge(args.model, config=config) as judge:
        print(f"judge: {judge}")
        # One criteria generation for the query, then one evaluation per response (judge.score gives the floats).
        judgments = judge.judge(query, responses)
        print("scores:", [j.score for j in judgments])
        for judgment in judgments:
            print(f"\nresponse {judgment.response_index}: {judgment.status.value}, score={judgment.score}")
            if judgment.reason:
                print(f"  reason: {judgment.reason}")
            criteria = judgment.criteria
            if criteria is not None:
                print(f"  criteria parsed: {[c.term for c in criteria.items] or criteria.problem}")
            usage = judgment.provenance.evaluation_usage
            print(f"  evaluation tokens: {usage.prompt_tokens} prompt + {usage.completion_tokens} generated")


if __name__ == "__main__":
    main()
