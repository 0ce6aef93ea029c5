"""Finer scores: the expected score from token probabilities, and the forced readout for judges that do not close the
CE-RM format. Every score says how it was read, so a forced number is never mistaken for the judge's own verdict.

    python examples/finer_scores.py                 # the embedded demo judge, small budgets
    python examples/finer_scores.py 64 64           # criteria_max_new_tokens, evaluation_max_new_tokens
    CERM_MODEL=PKU-ONELab/CE-RM-4B python examples/finer_scores.py 1024 2048

With the demo model (which never writes the format) the plain protocol is honestly UNSCORABLE; the forced readout
appends an explicit overall-score prefix ending in ``\\boxed{`` and reads the score distribution from the next tokens.
With a real CE-RM judge, ``score_readout="expected"`` turns the written half-point scores into expectations that tie
far less often.
"""
# ci: 24 16
# ci-expect: plain protocol : unscorable
# ci-expect: read as forced_expected
# ci-expect: forced readout, not the judge's own boxed score
# ci: 24 16

from __future__ import annotations

import os
import sys

from cerm import Judge, JudgeConfig, MemoryCriteriaCache


def main() -> None:
    criteria_tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    evaluation_tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 48
    model = os.environ.get("CERM_MODEL", "demo")
    query = "Which planet is closest to the Sun?"
    responses = ["Mercury is the closest planet to the Sun.", "Venus is the closest planet to the Sun."]

    base = JudgeConfig(criteria_max_new_tokens=criteria_tokens, evaluation_max_new_tokens=evaluation_tokens)
    finer = base.with_(score_readout="expected", forced_readout=True)
    cache = MemoryCriteriaCache()  # both judges share one criteria turn: the readouts only change stage 2
    with Judge(model, config=finer, cache=cache) as judge:
        plain = Judge(judge.backend, config=base, cache=cache).judge(query, responses)  # default readout
        judged = judge.judge(query, responses)

    for response, p, j in zip(responses, plain, judged, strict=True):
        print(f"response: {response}")
        print(f"  plain protocol : {p.status.value:<10} score={p.score}  ({p.reason or 'parsed'})")
        print(
            f"  finer readout  : {j.status.value:<10} score={j.score if j.score is None else round(j.score, 3)}"
            f"  read as {j.score_source}"
        )
        readout = j.chains[0].readout
        if readout is not None:
            top = sorted(readout.distribution, key=lambda vp: -vp[1])[:4]
            shown = ", ".join(f"{v:g}: {p:.2f}" for v, p in top)
            print(f"  distribution   : {shown}  (mass {readout.mass:.2f}, written {readout.greedy})")
        if j.forced:
            print("  note           : forced readout, not the judge's own boxed score")


if __name__ == "__main__":
    main()
