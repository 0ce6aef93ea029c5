"""The CE-RM protocol, pure Python: prompt templates, conversation assembly and parsers.

No torch, no network, no I/O. Anything that must agree between inference and training lives here once.
"""

from cerm.protocol._conversation import (
    Conversation,
    Message,
    criteria_conversation,
    evaluation_conversation,
)
from cerm.protocol._parse import (
    CRITERION_RANGE,
    END_OF_CRITERIA,
    OVERALL_RANGE,
    START_OF_CRITERIA,
    boxed_values,
    parse_criteria,
    parse_evaluation,
    parse_number,
    parse_overall_score,
)
from cerm.protocol._prompts import (
    CRITERIA_PROMPT,
    EVALUATION_PROMPT,
    PROMPT_VERSION,
    render_criteria_prompt,
    render_evaluation_prompt,
)

__all__ = [
    "CRITERIA_PROMPT",
    "CRITERION_RANGE",
    "END_OF_CRITERIA",
    "EVALUATION_PROMPT",
    "OVERALL_RANGE",
    "PROMPT_VERSION",
    "START_OF_CRITERIA",
    "Conversation",
    "Message",
    "boxed_values",
    "criteria_conversation",
    "evaluation_conversation",
    "parse_criteria",
    "parse_evaluation",
    "parse_number",
    "parse_overall_score",
    "render_criteria_prompt",
    "render_evaluation_prompt",
]
