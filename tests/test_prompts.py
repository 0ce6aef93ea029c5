"""The CE-RM prompt templates are a byte-exact contract with the released weights (SPEC section 1), and the
conversation assembly feeds the whole criteria turn back before the evaluation prompt."""

from __future__ import annotations

import hashlib

import pytest

from _support import PROTOCOL_DIR
from cerm.protocol import (
    CRITERIA_PROMPT,
    EVALUATION_PROMPT,
    PROMPT_VERSION,
    criteria_conversation,
    evaluation_conversation,
    render_criteria_prompt,
    render_evaluation_prompt,
)

# SHA-256 of the reference files shared/cerm_protocol/{criteria,evaluation}_prompt.txt. These run everywhere, also
# where the shared folder is absent: changing one byte of a template must fail a test and bump PROMPT_VERSION.
CRITERIA_SHA256 = "e4d87e465d2dae3d90bc487d17587b25233e32df2ec8dfec4b024001dba0d122"
EVALUATION_SHA256 = "164267b6fb7152535ac9e8e2a9027557e6f58e02d14bd50400629edb797c8cae"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_criteria_prompt_digest() -> None:
    assert _sha256(CRITERIA_PROMPT) == CRITERIA_SHA256


def test_evaluation_prompt_digest() -> None:
    assert _sha256(EVALUATION_PROMPT) == EVALUATION_SHA256


def test_prompt_version_is_recorded() -> None:
    # The digests above pin version ce-rm-v1; a template change needs a new version tag (and new digests).
    assert PROMPT_VERSION == "ce-rm-v1"


@pytest.mark.parametrize(
    ("constant", "filename"),
    [(CRITERIA_PROMPT, "criteria_prompt.txt"), (EVALUATION_PROMPT, "evaluation_prompt.txt")],
)
def test_prompts_match_reference_files_byte_for_byte(constant: str, filename: str) -> None:
    reference = PROTOCOL_DIR / filename
    if not PROTOCOL_DIR.is_dir():
        pytest.skip(f"{PROTOCOL_DIR} is absent (the SHA-256 tests still pin the templates)")
    assert constant.encode("utf-8") == reference.read_bytes()


def test_template_details_the_model_expects() -> None:
    # Trailing newline after the end markers, one placeholder each, the box written as $\boxed{}$.
    assert CRITERIA_PROMPT.endswith("[Start of Query]\n{query}\n[End of Query]\n")
    assert EVALUATION_PROMPT.endswith("[Start of Response]\n{response}\n[End of Response]\n")
    assert CRITERIA_PROMPT.count("{query}") == 1
    assert "{response}" not in CRITERIA_PROMPT
    assert EVALUATION_PROMPT.count("{response}") == 1
    assert "{query}" not in EVALUATION_PROMPT
    assert EVALUATION_PROMPT.count("$\\boxed{}$") == 2
    assert "[Start of Criteria] and [End of Criteria]" in CRITERIA_PROMPT
    assert '"Other Point(s),"' in EVALUATION_PROMPT


def test_render_fills_placeholders_exactly() -> None:
    query = "What is 2+2?"
    assert render_criteria_prompt(query) == CRITERIA_PROMPT.replace("{query}", query)
    assert render_criteria_prompt(query).endswith("[Start of Query]\nWhat is 2+2?\n[End of Query]\n")
    assert render_evaluation_prompt("4").endswith("[Start of Response]\n4\n[End of Response]\n")
    # The rendered prompts keep the literal box markup the released model was trained on.
    assert "$\\boxed{}$" in render_evaluation_prompt("4")


def test_braces_and_placeholders_inside_text_are_inert() -> None:
    # str.format would raise on "{x}" or substitute "{response}"; the templates are filled by plain replacement.
    query = "Format {query} and {response} and {0} and {} in Python; also \\boxed{3}"
    response = "Use {response!r} or {} and write \\boxed{10}"
    criteria_prompt = render_criteria_prompt(query)
    evaluation_prompt = render_evaluation_prompt(response)
    head, tail = CRITERIA_PROMPT.split("{query}")
    assert criteria_prompt == head + query + tail
    head, tail = EVALUATION_PROMPT.split("{response}")
    assert evaluation_prompt == head + response + tail


def test_criteria_conversation_sees_only_the_query() -> None:
    conversation = criteria_conversation("Explain TCP slow start.")
    assert conversation == [{"role": "user", "content": render_criteria_prompt("Explain TCP slow start.")}]


def test_evaluation_conversation_feeds_back_the_whole_criteria_turn() -> None:
    query = "Explain TCP slow start."
    criteria_text = (
        "The query asks for an explanation of a networking mechanism; accuracy matters most.\n\n"
        "[Start of Criteria]\n1. Accuracy: The mechanism is described correctly.\n"
        "2. Clarity: Easy to follow.\n[End of Criteria]\n\nThese cover the essentials."
    )
    response = "TCP slow start doubles the congestion window every round trip until a threshold."
    conversation = evaluation_conversation(query, criteria_text, response)
    assert [m["role"] for m in conversation] == ["user", "assistant", "user"]
    # Turn 1 exactly as the criteria stage sent it; turn 2 the WHOLE criteria text (analysis and trailing text
    # included, not only the parsed list); turn 3 the evaluation prompt with the response.
    assert conversation[0] == criteria_conversation(query)[0]
    assert conversation[1]["content"] == criteria_text
    assert conversation[2]["content"] == render_evaluation_prompt(response)
    assert query not in conversation[2]["content"]
