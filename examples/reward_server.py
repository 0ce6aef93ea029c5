"""The OpenRLHF-compatible reward server: start it, query it once over HTTP, stop it.

`python examples/reward_server.py` does all three in one process. For training, run the server on its own:

    cerm serve --model PKU-ONELab/CE-RM-4B --port 5000 --unscorable-reward 0 --scale 0 1
    # OpenRLHF 0.11: --reward.remote_url http://127.0.0.1:5000/get_reward   (older releases: --remote_rm_url)
"""
# ci:
# ci-requires: fastapi uvicorn httpx
# ci-expect: server up at http://127.0.0.1:
# ci-expect: "rewards"
# ci-expect: server stopped

from __future__ import annotations

import argparse
import json

import httpx

from cerm import Judge, JudgeConfig
from cerm.integrations import RewardServer, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", default="demo")
    parser.add_argument("--judge-tokens", type=int, default=8)
    args = parser.parse_args()

    judge = Judge(
        args.judge,
        config=JudgeConfig(criteria_max_new_tokens=args.judge_tokens, evaluation_max_new_tokens=args.judge_tokens),
    )
    app = create_app(judge, unscorable_reward=0.0, scale=(0, 1))
    # OpenRLHF sends the chat-templated prompt and the decoded prompt + response, special tokens included.
    tokenizer = judge.backend.tokenizer  # type: ignore[attr-defined]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    body = {
        "query": [prompt + "Paris is the capital of France.<|im_end|>", prompt + "Berlin.<|im_end|>"],
        "prompts": [prompt, prompt],
        "labels": ["", ""],
    }
    with RewardServer(app) as server:  # a real uvicorn server on a free local port
        print(f"server up at {server.url}: {httpx.get(server.url + '/health').json()}")
        answer = httpx.post(server.url + "/get_reward", json=body, timeout=600).json()
        print(json.dumps(answer, indent=1))
    print("server stopped")
    judge.close()


if __name__ == "__main__":
    main()
