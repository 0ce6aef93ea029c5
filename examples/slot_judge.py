"""ESFP-RM slot judge: an explanation (stage 1), then a verbalizer word read at one slot (stage 2).

    python examples/slot_judge.py                                        # demo model for both stages (cloze readout)
    python examples/slot_judge.py --slot-model runs/slot/model           # a masked LM, e.g. from `cerm train slot`
    python examples/slot_judge.py --slot-model FacebookAI/roberta-base --explainer PKU-ONELab/CE-RM-4B --ce-rm

With no --slot-model, the embedded demo model reads the slot as a causal-LM cloze (the autoregressive baseline the
ESFP-RM paper compares against); pass any AutoModelForMaskedLM folder or name for the masked-LM judge itself. The
judge has the CE-RM Judge's interface (score, judge, compare, best_of_n, batches, async): every cerm surface takes it.
"""
# ci: --explanation-tokens 8
# ci-expect: best:

from __future__ import annotations

import argparse

from cerm import (
    BackendExplainer,
    CausalSlotReader,
    CermExplainer,
    Judge,
    JudgeConfig,
    MaskedSlotReader,
    SlotJudge,
    create_backend,
)
from cerm.backends import SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slot-model", default=None, help="a masked LM (default: the demo model as a cloze)")
    parser.add_argument("--explainer", default="demo", help="the stage-1 model (any cerm backend's model name)")
    parser.add_argument("--ce-rm", action="store_true", help="use CE-RM's own evaluation text as the explanation")
    parser.add_argument("--explanation-tokens", type=int, default=96)
    args = parser.parse_args()

    reader = MaskedSlotReader(args.slot_model) if args.slot_model else CausalSlotReader("demo")
    backend = create_backend("hf", args.explainer)
    if args.ce_rm:
        tokens = args.explanation_tokens
        config = JudgeConfig(criteria_max_new_tokens=tokens, evaluation_max_new_tokens=tokens)
        explainer: BackendExplainer | CermExplainer = CermExplainer(Judge(backend, config=config))
    else:
        explainer = BackendExplainer(backend, params=SamplingParams(max_new_tokens=args.explanation_tokens))

    query = "What is the boiling point of water at sea level, in Celsius?"
    candidates = ["Water boils at 100 degrees Celsius at sea level.", "About 50 degrees Celsius.", ""]
    with SlotJudge(reader, explainer) as judge:
        print(f"judge: {judge}")
        for judgment in judge.judge(query, candidates):
            slot = judgment.slot
            print(f"[{judgment.response_index}] {judgment.status.value:<10} score={judgment.score}")
            if judgment.reason:
                print(f"    reason: {judgment.reason}")
            if slot is not None and slot.margin is not None:
                print(f"    log p(good) - log p(bad) = {slot.margin:+.3f}; explanation: {slot.explanation!r}")
        best = judge.best_of_n(query, candidates)
        print(f"best: {best.best_index} ({best.best!r})")
    backend.close()


if __name__ == "__main__":
    main()
