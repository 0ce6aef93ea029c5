"""Peak memory of HF generation with token log-probabilities: cerm's step-by-step readout versus output_logits.

The expected score readout asks for the top 20 alternatives of every generated token. Keeping every step's full
logits (transformers' ``output_logits=True``, then one log-softmax over the stack, which is what the HF backend did
before) costs rows x steps x vocabulary floats several times over; cerm's forward hook keeps the chosen token and the
top k per step. Each mode runs in a fresh child process, which reports its peak RSS growth over the loaded model;
``no_logprobs`` is the same generation without log-probabilities, the floor both others share.

    python benchmarks/hf_logprob_memory.py --rows 8 --max-new-tokens 512
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
from cerm.backends import SamplingParams
from cerm.backends.hf import HFBackend

mode, rows, steps, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
backend = HFBackend("demo", device="cpu", batch_size=rows)
prompts = [[{"role": "user", "content": f"Tell a very long story about a lighthouse keeper number {i}."}]
           for i in range(rows)]
backend.generate(prompts[:1], SamplingParams(max_new_tokens=2))  # warm-up allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode in ("cerm", "no_logprobs"):
    wanted = top if mode == "cerm" else None
    out = backend.generate(prompts, SamplingParams(max_new_tokens=steps, top_logprobs=wanted))
    generated = sum(row[0].completion_tokens for row in out)
    assert all(row[0].logprobs for row in out) == (mode == "cerm")
else:  # what the backend did before: keep every step's logits, log-softmax the stack
    tok = backend.tokenizer
    enc = tok.pad({"input_ids": [tok(backend.render(p), add_special_tokens=False)["input_ids"] for p in prompts]},
                  padding=True, return_tensors="pt")
    with torch.inference_mode():
        res = backend.model.generate(**enc, max_new_tokens=steps, do_sample=False, temperature=None, top_p=None,
                                     top_k=None, pad_token_id=tok.pad_token_id, return_dict_in_generate=True,
                                     output_logits=True)
        stacked = torch.stack(list(res.logits), dim=1).float().log_softmax(dim=-1)
        values, ids = stacked.topk(top, dim=-1)
    generated = rows * len(res.logits)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mode": mode, "peak_growth_mib": (peak - before) / 1024, "seconds": seconds,
                  "generated_tokens": generated, "vocab": backend.model.config.vocab_size}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hf_logprob_memory.json"))
    args = parser.parse_args()

    results = []
    for mode in ("no_logprobs", "output_logits", "cerm"):
        child = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(args.rows), str(args.max_new_tokens), str(args.top)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))

    print(f"{'mode':>14} {'peak growth MiB':>16} {'wall s':>8} {'generated':>10}")
    for r in results:
        print(f"{r['mode']:>14} {r['peak_growth_mib']:>16.0f} {r['seconds']:>8.1f} {r['generated_tokens']:>10}")
    payload = {
        "benchmark": "hf_logprob_memory",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "rows": args.rows,
        "max_new_tokens": args.max_new_tokens,
        "top_logprobs": args.top,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
