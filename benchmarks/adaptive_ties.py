"""Adaptive tie-breaks against greedy and fixed k = 4: tie rate, accuracy and judge tokens, on held-out pairs.

The pairs are cerm's checkable held-out split (``cerm.training.checkable_pairs(n, seed=, split="heldout")``): a
question, a right answer (chosen) and a wrong one (rejected). The judge is scripted, so every number is exact and
the tie rate is known in advance: each response has a latent quality ``mu`` (chosen ``mu_c`` uniform in [2, 8],
rejected ``mu_c - gap`` with ``gap`` uniform in [-0.5, 2]: about one pair in six the judge truly prefers the wrong
answer). A greedy evaluation writes ``round(mu)``, so a pair ties exactly when both latents round to the same integer
(the script checks the measured greedy tie rate against that count); a sampled evaluation writes
``round(mu + noise)``, noise normal with ``--noise`` standard deviation, seeded per conversation. With
``--logprobs`` the scripted judge also returns the score token's probabilities (a softmax around ``mu`` plus a small
readout noise), so the expected-score readout can break ties with no generation.

Methods, each on the same pairs: ``greedy`` (k = 1), ``fixed k=4`` (4 sampled chains per response, the fixed
test-time scaling), ``adaptive`` (greedy, then ``TieBreak(max_chains=4)``: sampled chains for tied pairs only, the
same maximum per response), and with log-probabilities ``expected readout`` (greedy + ``score_readout="expected"``)
and ``adaptive+expected`` (the tie-break with its expected-score first resort). Accuracy counts a tie as half (the
eval harness's default). Judge tokens: prompt + completion tokens of every generation (the mock counts words).

    PYTHONPATH=src python benchmarks/adaptive_ties.py --pairs 400 --seed 0

With ``--model`` (e.g. ``demo``, the trained demo judge) the same methods run on a real model through the HF backend
instead (loaded once; each method counts its own generations and the prompt + completion tokens the backend
reported, through :class:`~cerm.backends.InstrumentedBackend`). Nothing is known in advance then: the table is what
the model did. ``--with-expected`` adds the two expected-score rows (HF returns token probabilities).

    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/adaptive_ties.py --model demo --pairs 24 --seed 0 \
        --output benchmarks/results/adaptive_ties_demo.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cerm import Completion, Judge, JudgeConfig, SamplingParams, TieBreak
from cerm.backends import Backend, InstrumentedBackend, MockBackend, TokenLogprob
from cerm.protocol import Conversation
from cerm.training import checkable_pairs

RESULTS = Path(__file__).resolve().parent / "results"
CRITERIA = (
    "The answer must be correct and clearly stated.\n[Start of Criteria]\n1. Correctness: the value is right.\n"
    "2. Clarity: the answer is easy to find.\n[End of Criteria]"
)


def _response(conversation: Conversation) -> str:
    return conversation[-1]["content"].split("[Start of Response]\n", 1)[1].rsplit("\n[End of Response]", 1)[0]


def _query(conversation: Conversation) -> str:
    return conversation[0]["content"].split("[Start of Query]\n", 1)[1].rsplit("\n[End of Query]", 1)[0]


@dataclass
class ScriptedJudge:
    """The scripted judge: latent qualities per (query, response), token counting, optional log-probabilities."""

    latent: dict[tuple[str, str], tuple[float, float]]  # (query, response) -> (quality, greedy view's bias)
    noise: float
    logprobs: bool
    tokens: int = 0
    generations: int = 0

    def backend(self) -> MockBackend:
        return MockBackend(self.respond, supports_logprobs=self.logprobs)

    def respond(self, conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        prompt_tokens = sum(len(m["content"].split()) + 4 for m in conversation)
        if len(conversation) == 1:
            text = CRITERIA + (f"\n(criteria sample {params.seed}/{sample})" if not params.greedy else "")
            return self._count(Completion(text, "stop", prompt_tokens, len(text.split())))
        query, response = _query(conversation), _response(conversation)
        mu, bias = self.latent[(query, response)]
        criteria = conversation[1]["content"]
        if criteria == CRITERIA:  # the greedy criteria set: the judge's fixed view of this response, biased
            view = mu + bias
        else:  # a sampled criteria set: another view, its own noise
            view = mu + random.Random(f"{criteria}|{response}").gauss(0.0, self.noise)
        rng = random.Random(f"{params.seed}|{sample}|{criteria}|{response}")
        center = view if params.greedy else view + rng.gauss(0.0, self.noise / 2)
        score = min(9, max(0, round(center)))
        head = "**1. Correctness:** judged. $\\boxed{4}$\n**Overall:** Overall quality score: $\\boxed{"
        if self.logprobs and params.top_logprobs:
            # The score token's distribution: a softmax around the judge's view, over the 10 digits.
            weights = [math.exp(-((s - center) ** 2) / 2.0) for s in range(10)]
            total = sum(weights)
            top = sorted(((str(s), math.log(w / total)) for s, w in enumerate(weights)), key=lambda x: -x[1])
            score_token = TokenLogprob(str(score), dict(top)[str(score)], tuple(top[: params.top_logprobs]))
        else:
            score_token = TokenLogprob(str(score), 0.0, ((str(score), 0.0),))
        # One token per character around the score (a digit-splitting tokenizer), certain except at the score.
        tokens = [TokenLogprob(ch, 0.0, ((ch, 0.0),)) for ch in head] + [score_token]
        tokens += [TokenLogprob(ch, 0.0, ((ch, 0.0),)) for ch in "}$"]
        text = "".join(t.token for t in tokens)
        logprobs = tuple(tokens) if params.top_logprobs else None
        return self._count(Completion(text, "stop", prompt_tokens, len(text.split()), logprobs))

    def _count(self, completion: Completion) -> Completion:
        self.tokens += completion.prompt_tokens + completion.completion_tokens
        self.generations += 1
        return completion


class _Counted:
    """A real backend's costs for one method, read the way the scripted judge counts them."""

    def __init__(self, inner: Backend) -> None:
        self.backend = InstrumentedBackend(inner)

    @property
    def generations(self) -> int:
        return sum(len(conversations) for conversations, _ in self.backend.calls)

    @property
    def tokens(self) -> int:
        return self.backend.prompt_tokens + self.backend.completion_tokens


def _outcome(chosen: float | None, rejected: float | None, order: Sequence[int] | None = None) -> str:
    if chosen is None or rejected is None:
        return "unscored"
    if order is not None:
        return "right" if order[0] == 0 else "wrong"
    return "right" if chosen > rejected else "wrong" if chosen < rejected else "tie"


def run_method(
    name: str, items: list[tuple[str, list[str]]], judge_factory: Any, tie: TieBreak | None
) -> dict[str, Any]:
    scripted, judge = judge_factory()
    started = time.monotonic()
    outcomes: list[str] = []
    extra_chains = 0
    if tie is None:
        for row in judge.judge_batch(items):
            outcomes.append(_outcome(row[0].score, row[1].score))
    else:
        for judgments, report in judge.decide_batch(items, tie, scope="top"):
            a, b = report.candidates
            still = a.contending and b.contending and a.key == b.key
            order = None if still else report.order
            outcomes.append(_outcome(judgments[0].score, judgments[1].score, order))
            extra_chains += report.added_chains
    n = len(outcomes)
    right, ties = outcomes.count("right"), outcomes.count("tie")
    return {
        "method": name,
        "pairs": n,
        "ties": ties,
        "tie_rate": ties / n,
        "accuracy": (right + 0.5 * ties) / n,
        "unscored": outcomes.count("unscored"),
        "generations": scripted.generations,
        "judge_tokens": scripted.tokens,
        "added_chains": extra_chains,
        "seconds": time.monotonic() - started,
    }


def _write(fields: dict[str, Any], output: Path) -> None:
    """The run's JSON: what was run, when and where, then ``fields``."""
    record = {
        "benchmark": "adaptive_ties",
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} python {platform.python_version()}",
        **fields,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=1.0, help="std of a sampled criteria set's view of a response")
    parser.add_argument("--bias", type=float, default=0.5, help="std of the greedy criteria set's bias per response")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default: results/adaptive_ties*.json)")
    parser.add_argument("--model", default=None, help="a real judge model for the HF backend (e.g. demo)")
    parser.add_argument("--criteria-tokens", type=int, default=320, help="with --model: criteria token budget")
    parser.add_argument("--evaluation-tokens", type=int, default=320, help="with --model: evaluation token budget")
    parser.add_argument("--with-expected", action="store_true", help="with --model: the expected-score rows too")
    args = parser.parse_args()
    if args.model is not None:
        return run_model(args)
    args.output = args.output or RESULTS / "adaptive_ties.json"

    pairs = checkable_pairs(args.pairs, seed=args.seed, split="heldout")
    rng = random.Random(f"adaptive-ties:{args.seed}")
    latent: dict[tuple[str, str], tuple[float, float]] = {}
    for pair in pairs:
        mu_c = rng.uniform(2.0, 8.0)
        latent[(pair.prompt, pair.chosen)] = (mu_c, rng.gauss(0.0, args.bias))
        latent[(pair.prompt, pair.rejected)] = (mu_c - rng.uniform(0.1, 2.0), rng.gauss(0.0, args.bias))
    items = [(p.prompt, [p.chosen, p.rejected]) for p in pairs]

    def greedy_score(key: tuple[str, str]) -> int:
        mu, bias = latent[key]
        return min(9, max(0, round(mu + bias)))

    known_ties = sum(greedy_score((p.prompt, p.chosen)) == greedy_score((p.prompt, p.rejected)) for p in pairs)
    known_wrong = sum(greedy_score((p.prompt, p.chosen)) < greedy_score((p.prompt, p.rejected)) for p in pairs)

    def factory(logprobs: bool, **config: Any) -> Any:
        def make() -> tuple[ScriptedJudge, Judge]:
            scripted = ScriptedJudge(latent, args.noise, logprobs)
            return scripted, Judge(scripted.backend(), config=JudgeConfig(seed=args.seed, **config))

        return make

    adaptive = TieBreak(max_chains=4)
    rows = [
        run_method("greedy", items, factory(False), None),
        run_method("fixed k=4", items, factory(False, k=4), None),
        run_method("adaptive (max 4 chains)", items, factory(False), TieBreak(max_chains=4, expected_first=False)),
        run_method("expected readout", items, factory(True, score_readout="expected"), None),
        run_method("adaptive+expected", items, factory(True), adaptive),
    ]
    # The scripted judge's greedy ties and errors, exactly as constructed.
    assert rows[0]["ties"] == known_ties, (rows[0]["ties"], known_ties)
    assert rows[0]["accuracy"] == (len(pairs) - known_wrong - known_ties / 2) / len(pairs)

    print(
        f"{len(pairs)} held-out checkable pairs (seed {args.seed}), scripted judge: greedy tie rate known "
        f"{known_ties / len(pairs):.3f}, greedy wrong {known_wrong / len(pairs):.3f}; noise {args.noise}, "
        f"bias {args.bias}"
    )
    fixed_tokens = rows[1]["judge_tokens"]
    header = f"{'method':<26} {'ties':>5} {'tie rate':>9} {'accuracy':>9} {'generations':>12} {'judge tokens':>13}"
    print(f"{header} {'vs k=4':>7}")
    for row in rows:
        share = row["judge_tokens"] / fixed_tokens
        print(
            f"{row['method']:<26} {row['ties']:>5} {row['tie_rate']:>9.3f} {row['accuracy']:>9.3f} "
            f"{row['generations']:>12} {row['judge_tokens']:>13} {share:>7.2f}"
        )
    record = {
        "pairs": len(pairs),
        "seed": args.seed,
        "noise": args.noise,
        "known_greedy_tie_rate": known_ties / len(pairs),
        "known_greedy_wrong_rate": known_wrong / len(pairs),
        "bias": args.bias,
        "rows": rows,
    }
    _write(record, args.output)
    return 0


def run_model(args: argparse.Namespace) -> int:
    """The methods on a real model: greedy, fixed k = 4, adaptive with the same maximum (and the expected rows)."""
    from cerm.backends import create_backend

    pairs = checkable_pairs(args.pairs, seed=args.seed, split="heldout")
    items = [(p.prompt, [p.chosen, p.rejected]) for p in pairs]
    inner = create_backend("hf", args.model, device="cpu")
    budgets = {"criteria_max_new_tokens": args.criteria_tokens, "evaluation_max_new_tokens": args.evaluation_tokens}

    def factory(**config: Any) -> Any:
        def make() -> tuple[_Counted, Judge]:
            counted = _Counted(inner)
            return counted, Judge(counted.backend, config=JudgeConfig(seed=args.seed, **budgets, **config))

        return make

    methods: list[tuple[str, Any, TieBreak | None]] = [
        ("greedy", factory(), None),
        ("fixed k=4", factory(k=4), None),
        ("adaptive (max 4 chains)", factory(), TieBreak(max_chains=4, expected_first=False)),
    ]
    if args.with_expected:
        methods += [
            ("expected readout", factory(score_readout="expected"), None),
            ("adaptive+expected", factory(), TieBreak(max_chains=4)),
        ]
    print(
        f"{len(pairs)} held-out checkable pairs (seed {args.seed}), model {args.model} ({inner.model_id}), "
        f"budgets {args.criteria_tokens}/{args.evaluation_tokens} tokens"
    )
    header = f"{'method':<26} {'ties':>5} {'tie rate':>9} {'accuracy':>9} {'unscored':>9} {'generations':>12}"
    print(f"{header} {'judge tokens':>13} {'seconds':>8}", flush=True)
    rows = []
    for name, make, tie in methods:
        row = run_method(name, items, make, tie)
        rows.append(row)
        print(
            f"{row['method']:<26} {row['ties']:>5} {row['tie_rate']:>9.3f} {row['accuracy']:>9.3f} "
            f"{row['unscored']:>9} {row['generations']:>12} {row['judge_tokens']:>13} {row['seconds']:>8.0f}",
            flush=True,
        )
    fixed_tokens = rows[1]["judge_tokens"]
    for row in rows:
        row["tokens_vs_fixed_k4"] = row["judge_tokens"] / fixed_tokens
    print("judge tokens against fixed k=4: " + ", ".join(f"{r['method']} {r['tokens_vs_fixed_k4']:.2f}" for r in rows))
    inner.close()
    record = {
        "model": args.model,
        "model_id": inner.model_id,
        "pairs": len(pairs),
        "seed": args.seed,
        "criteria_max_new_tokens": args.criteria_tokens,
        "evaluation_max_new_tokens": args.evaluation_tokens,
        "rows": rows,
    }
    _write(record, args.output or RESULTS / f"adaptive_ties_{args.model}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
