"""A CE-RM judge as veRL's custom reward function: `python examples/verl_reward.py` runs it once on two responses.

Point veRL at this file:

    custom_reward_function.path=examples/verl_reward.py custom_reward_function.name=compute_score
    reward_model.reward_manager=batch      # one judge call per batch; responses of a prompt share one criteria set

veRL gives the function only the response text, so the judge's query comes from extra_info["question"] (store it there
in your dataset preprocessing). UNSCORABLE responses get `unscorable_score` (chosen explicitly below) and are flagged
in the returned dict ("scorable": False, "reason": ...), which veRL logs per response.
"""
# ci:
# ci-expect: "scorable"

from __future__ import annotations

import json
import os

from cerm import Judge, JudgeConfig
from cerm.integrations import VerlReward

JUDGE_MODEL = os.environ.get("CERM_JUDGE", "demo")
JUDGE_TOKENS = int(os.environ.get("CERM_JUDGE_TOKENS", "8"))

# Built lazily: the model loads inside veRL's reward worker at the first call, not when veRL imports this file.
compute_score = VerlReward(
    lambda: Judge(
        JUDGE_MODEL,
        config=JudgeConfig(criteria_max_new_tokens=JUDGE_TOKENS, evaluation_max_new_tokens=JUDGE_TOKENS),
    ),
    unscorable_score=0.0,  # a choice: 0.0 treats a judge format failure like the worst answer
    scale=(0, 1),
)
# For veRL's asynchronous reward loop, point custom_reward_function.name at this coroutine function instead.
compute_score_async = compute_score.acompute_score


if __name__ == "__main__":
    question = "What is the capital of France?"
    # Exactly how veRL's batch reward manager calls the function (keyword arguments, one list each).
    results = compute_score(
        data_sources=["demo", "demo"],
        solution_strs=["The capital of France is Paris.", "It is Berlin."],
        ground_truths=["Paris", "Paris"],
        extra_infos=[{"question": question}, {"question": question}],
    )
    for result in results:
        print(json.dumps(result))
    # ... and how its naive manager calls it, once per response.
    print(
        json.dumps(
            compute_score(
                data_source="demo", solution_str="Paris.", ground_truth="Paris", extra_info={"question": question}
            )
        )
    )
