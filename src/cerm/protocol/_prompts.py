"""The two CE-RM prompt templates, byte for byte as the released ``PKU-ONELab/CE-RM-4B`` weights expect them.

These strings are a compatibility contract (SPEC section 1): do not reflow, re-indent or "fix" them. A test pins them
against the reference files and against a SHA-256 digest. The placeholders are ``{query}`` and ``{response}``; they
are filled with :func:`str.replace`, never :meth:`str.format`, so braces inside a query or a response are inert.
"""

from __future__ import annotations

#: Version tag recorded in every judgment's provenance. Bump it whenever a template byte changes.
PROMPT_VERSION = "ce-rm-v1"

CRITERIA_PROMPT = """Your task is to produce a minimal set of criteria for evaluating the quality of potential responses to the user query given below.

Begin by carefully analyzing the query to fully understand the user's intent and requirements, and then take into account all common and tangible factors that can indicate the response quality.

From these considerations, derive the final evaluation criteria list, which **must adhere to the following requirements:**

- Each criterion should consist of a concise term as well as its unambiguous description.
- The number of criteria is not necessarily the more the better; Fewer yet comprehensive is more desired.
- The criteria should be sufficient and complete, ensuring that no essential aspects or key signals of response quality are omitted.
- The criteria should be necessary and non-overlapping, with each one indispensable, distinct in perspective, and strictly orthogonal to others.

Provide the relevant analysis first, followed by the numbered list of criteria between [Start of Criteria] and [End of Criteria], with one criterion per line and the more important ones coming first.

Below is the user query:

[Start of Query]
{query}
[End of Query]
"""

EVALUATION_PROMPT = """Now that you have a response to the previous user query, your new task is to evaluate it using the criteria list you have produced.

For each criterion, focus on its concerns and carefully evaluate the corresponding specific quality of the response, providing the detailed analysis as well as relevant arguments, followed by the corresponding quality score from 0 to 5 within $\\boxed{}$.

Moreover, if the response demonstrates strengths or weaknesses beyond the scope of your criteria list, introduce an additional criterion titled "Other Point(s)," discussing them and considering them as bonus points or deductions as appropriate.

Finally, based on the analyses of these criteria, including their relative importance and scores, **conduct a comprehensive evaluation of the response's overall quality with sufficient and explicit evidence**, and then provide a corresponding overall quality score from 0 to 10 within $\\boxed{}$.

Use integers or half-point increments for all scores, with higher numbers representing higher quality.

Below is the response:

[Start of Response]
{response}
[End of Response]
"""

QUERY_PLACEHOLDER = "{query}"
RESPONSE_PLACEHOLDER = "{response}"


def render_criteria_prompt(query: str) -> str:
    """The first user turn: the criteria prompt with the query in place."""
    return CRITERIA_PROMPT.replace(QUERY_PLACEHOLDER, query, 1)


def render_evaluation_prompt(response: str) -> str:
    """The second user turn: the evaluation prompt with the response in place."""
    return EVALUATION_PROMPT.replace(RESPONSE_PLACEHOLDER, response, 1)
