"""A CE-RM judge as veRL's custom reward function: `python examples/verl_reward.py` runs it once on two responses.

Point veRL (0.9.x, the tested release 0.9.1) at this file:

    reward.custom_reward_function.path=examples/verl_reward.py reward.custom_reward_function.name=compute_score
    # veRL 0.7/0.8: custom_reward_function.path=... custom_reward_function.name=compute_score

veRL 0.9 scores each response alone, from `reward.num_workers` CPU actors (8 by default). The criteria of a prompt are
still written once and shared: give every worker the same SQLite criteria cache file, and a judge they all call:

    +reward.custom_reward_function.reward_kwargs.judge_model=PKU-ONELab/CE-RM-4B
    +reward.custom_reward_function.reward_kwargs.judge_base_url=http://127.0.0.1:8000/v1     # e.g. `vllm serve`
    +reward.custom_reward_function.reward_kwargs.criteria_cache=/shared/disk/criteria.sqlite

or the same through the environment of the workers (CERM_JUDGE, CERM_JUDGE_BASE_URL, CERM_CRITERIA_CACHE). With veRL's
own reward model enabled (reward.reward_model.enable=True, model_path=the CE-RM model), veRL passes
`reward_router_address` and the judge calls that server with no further setting. Without any of these, the judge loads
the model named by CERM_JUDGE (default: the embedded demo judge) inside each worker.

veRL gives the function only the response text, so the judge's query comes from extra_info["question"] (store it there
in your dataset preprocessing). UNSCORABLE responses get `unscorable_score` (chosen explicitly below) and are flagged
in the returned dict ("scorable": False, "reason": ...), which veRL logs per response. A response the judge could not
judge at all (its server down) raises JudgeUnavailableError: veRL's step fails rather than train on an invented reward.
"""
# ci:
# ci-expect: "scorable"

from __future__ import annotations

import json
import os

from cerm import JudgeConfig
from cerm.integrations import VerlReward

JUDGE_TOKENS = int(os.environ.get("CERM_JUDGE_TOKENS", "8"))

# The judge is built at the first call inside each reward worker (not when veRL imports this file), from the call's
# reward_kwargs, the environment or veRL's reward model router.
compute_score = VerlReward.configured(
    unscorable_score=0.0,  # a choice: 0.0 treats a judge format failure like the worst answer
    scale=(0, 1),
    config=JudgeConfig(criteria_max_new_tokens=JUDGE_TOKENS, evaluation_max_new_tokens=JUDGE_TOKENS),
)
# For a coroutine function (veRL awaits it on its reward loop instead of using a thread), point
# reward.custom_reward_function.name at this one.
compute_score_async = compute_score.acompute_score


if __name__ == "__main__":
    question = "What is the capital of France?"
    # Exactly how veRL 0.9's reward managers call the function: keyword arguments, one response at a time.
    for answer in ("The capital of France is Paris.", "It is Berlin."):
        result = compute_score(
            data_source="demo", solution_str=answer, ground_truth="Paris", extra_info={"question": question}
        )
        print(json.dumps(result))
    # ... and how the batch manager of older releases calls it.
    results = compute_score(
        data_sources=["demo"], solution_strs=["Paris."], ground_truths=["Paris"], extra_infos=[{"question": question}]
    )
    print(json.dumps(results))
