"""Judge through any OpenAI-compatible server (vLLM, SGLang, llama.cpp, a hosted endpoint).

    python examples/openai_backend.py http://127.0.0.1:8000/v1 [MODEL] [MAX_NEW_TOKENS]

The base URL can also come from $CERM_BASE_URL or $OPENAI_BASE_URL, the key from $OPENAI_API_KEY (local servers need
none). To try it on this machine with the embedded demo model:

    GGUF="$(python -c 'from cerm._embedded import demo_gguf_path; print(demo_gguf_path())')"
    python -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port 8000 &
    python examples/openai_backend.py http://127.0.0.1:8000/v1 demo 48
"""
# ci: (started by the test against a llama.cpp server it runs)
# ci-custom: tests/test_example_openai.py

from __future__ import annotations

import asyncio
import logging
import os
import sys

from cerm import Judge, JudgeConfig
from cerm.backends.openai import OpenAIBackend


def main() -> int:
    args = sys.argv[1:]
    base_url = args[0] if args else os.environ.get("CERM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        print(__doc__, file=sys.stderr)
        return 2
    model = args[1] if len(args) > 1 else os.environ.get("CERM_MODEL", "PKU-ONELab/CE-RM-4B")
    max_new_tokens = int(args[2]) if len(args) > 2 else int(os.environ.get("CERM_MAX_NEW_TOKENS", "1024"))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    backend = OpenAIBackend(
        model,
        base_url=base_url,
        max_concurrency=16,  # requests in flight at once
        max_attempts=4,  # retries on 429 / 5xx / timeouts / dropped connections
        timeout=300,
        # chat_template_kwargs={"enable_thinking": False} is sent by default (vLLM, SGLang read it; a server that
        # refuses the field gets requests without it); send_template_kwargs=False never sends it.
    )
    config = JudgeConfig(criteria_max_new_tokens=max_new_tokens, evaluation_max_new_tokens=max_new_tokens)
    query = "What is the capital of France?"
    responses = ["Paris is the capital of France.", "The capital of France is Berlin.", "Paris."]

    with backend, Judge(backend, config=config) as judge:
        # One criteria request, then the three evaluations concurrently.
        for j in judge.judge(query, responses):
            verdict = f"{j.score:g}" if j.score is not None else f"UNSCORABLE ({j.reason})"
            print(f"response {j.response_index}: {verdict}")
        usage = j.provenance.criteria_usage + j.provenance.evaluation_usage
        print(f"backend: {backend.describe()}")
        print(f"tokens for the last response (criteria + evaluation): {usage.total_tokens}")

        # The async API, for code that already runs an event loop.
        scores = asyncio.run(judge.ascore("Name a primary colour.", ["Red.", "Banana."]))
        print(f"async scores: {scores}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
