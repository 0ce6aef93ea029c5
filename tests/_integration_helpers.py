"""Shared pieces of the integration tests: a scripted CE-RM judge and a tiny random policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cerm import Judge, JudgeConfig
from cerm.backends import Completion, MockBackend, SamplingParams
from cerm.protocol import Conversation

CRITERIA_TEXT = "Analysis.\n[Start of Criteria]\n1. Accuracy: the answer is right.\n[End of Criteria]"


def scripted_score(response_turn: str) -> int:
    """A deterministic 0-10 score that varies with the evaluated text (so GRPO groups get non-zero advantages)."""
    return sum(map(ord, response_turn)) % 11


def scripted_responder(conversation: Conversation, params: SamplingParams, index: int) -> str:
    if len(conversation) == 1:  # criteria turn
        return CRITERIA_TEXT
    last = conversation[-1]["content"]
    if "UNSCORABLE" in last:
        return "I refuse to write a score."
    return f"Accuracy: fine. $\\boxed{{3}}$\nOverall: $\\boxed{{{scripted_score(last)}}}$"


def mock_judge() -> tuple[Judge, MockBackend]:
    backend = MockBackend(scripted_responder)
    return Judge(backend, config=JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32)), backend


def failing_judge(tag: str = "boom") -> tuple[Judge, MockBackend]:
    """The scripted judge, except that the evaluation of a response containing ``tag`` fails as a generation (what the
    backends report for an outage, exhausted retries or out of memory): that judgment is ``Status.ERROR``."""

    def respond(conversation: Conversation, params: SamplingParams, index: int) -> str | Completion:
        if len(conversation) > 1 and tag in conversation[-1]["content"]:
            return Completion.failed("judge server unreachable after 6 attempts")
        return scripted_responder(conversation, params, index)

    backend = MockBackend(respond)
    return Judge(backend, config=JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32)), backend


def tiny_policy(seed: int = 0, *, max_position_embeddings: int = 512, tokenizer: Any = None) -> tuple[Any, Any]:
    """A randomly initialised ~3M-parameter Qwen3 with SmolLM2's tokenizer (from the embedded demo model folder)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

    from cerm._embedded import demo_model_path

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(demo_model_path()))
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config), tokenizer


def save_tiny_policy(folder: Path, *, tokenizer: Any = None) -> Path:
    """:func:`tiny_policy` (seed 0, 2048 positions: room for whole CE-RM conversations) saved with its tokenizer."""
    model, tokenizer = tiny_policy(0, max_position_embeddings=2048, tokenizer=tokenizer)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
