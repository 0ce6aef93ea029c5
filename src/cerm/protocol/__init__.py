"""The CE-RM protocol, pure Python: prompt templates, conversation assembly, chat rendering and tokenization that
keeps untrusted text out of special tokens, parsers, the score readout from token log-probabilities, and the
two-stage-rollout rewards and advantages that training uses (with the one pair rule every surface shares).

No torch, no network, no I/O. Anything that must agree between inference and training lives here once.
"""

from cerm.protocol._conversation import (
    Conversation,
    Message,
    criteria_conversation,
    evaluation_conversation,
)
from cerm.protocol._dialogue import format_dialogue
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
from cerm.protocol._readout import (
    DEFAULT_MIN_MASS,
    FORCED_READOUT_SUFFIX,
    TokenAlternatives,
    closed_score,
    forced_readout_conversation,
    read_boxed_score,
    score_distribution,
)
from cerm.protocol._render import (
    PROTOCOL_TEMPLATE_KWARGS,
    ContentSpan,
    RenderedChat,
    assistant_token_mask,
    chat_template_kwargs,
    render_chat,
    tokenize_chat,
    tokenize_text,
)
from cerm.protocol._rewards import (
    ZERO_SPREAD,
    PairOutcome,
    TreeRole,
    TreeRow,
    TreeValues,
    group_advantages,
    mean_score,
    pair_outcome,
    rollout_pair_outcome,
    tree_layout,
    tree_size,
    two_stage_advantages,
    two_stage_rewards,
    win_value,
)

__all__ = [
    "CRITERIA_PROMPT",
    "CRITERION_RANGE",
    "DEFAULT_MIN_MASS",
    "END_OF_CRITERIA",
    "EVALUATION_PROMPT",
    "FORCED_READOUT_SUFFIX",
    "OVERALL_RANGE",
    "PROMPT_VERSION",
    "PROTOCOL_TEMPLATE_KWARGS",
    "START_OF_CRITERIA",
    "ZERO_SPREAD",
    "ContentSpan",
    "Conversation",
    "Message",
    "PairOutcome",
    "RenderedChat",
    "TokenAlternatives",
    "TreeRole",
    "TreeRow",
    "TreeValues",
    "assistant_token_mask",
    "boxed_values",
    "chat_template_kwargs",
    "closed_score",
    "criteria_conversation",
    "evaluation_conversation",
    "forced_readout_conversation",
    "format_dialogue",
    "group_advantages",
    "mean_score",
    "pair_outcome",
    "parse_criteria",
    "parse_evaluation",
    "parse_number",
    "parse_overall_score",
    "read_boxed_score",
    "render_chat",
    "render_criteria_prompt",
    "render_evaluation_prompt",
    "rollout_pair_outcome",
    "score_distribution",
    "tokenize_chat",
    "tokenize_text",
    "tree_layout",
    "tree_size",
    "two_stage_advantages",
    "two_stage_rewards",
    "win_value",
]
