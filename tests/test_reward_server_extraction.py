"""What the reward server hands the judge: the query and response taken from OpenRLHF's sample text for the common chat
templates, extra end-of-turn markers, a query taken from another request field or a user function, and prompts the
policy side truncated (judged as sent, flagged)."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from _integration_helpers import mock_judge
from cerm.cli import InputError
from cerm.cli._serve import load_function
from cerm.integrations import RewardServer, create_app
from cerm.integrations.openrlhf import DEFAULT_END_MARKERS, openrlhf_query, separate_response, strip_end_markers

pytest.importorskip("fastapi")

_RESPONSE = re.compile(r"\[Start of Response\]\n(.*)\n\[End of Response\]", re.S)

# The common templates, as their tokenizers render a system prompt, an earlier exchange and the last user turn (with
# the generation prompt), and the end-of-turn marker each appends after the response.
TEMPLATES: dict[str, tuple[str, str]] = {
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!"
        "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_end|>\n<|endoftext|>",
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\n",
        "<|eot_id|>",
    ),
    "gemma": (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
        "<end_of_turn>\n<eos>",
    ),
    "mistral": ("<s>[INST] Hi [/INST] Hello!</s>[INST] What is 2+2? [/INST]", "</s>"),
    "phi3": (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nWhat is 2+2?<|end|>"
        "\n<|assistant|>\n",
        "<|end|>\n<|endoftext|>",
    ),
}


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_each_common_template_gives_the_last_user_turn_and_a_clean_response(template: str) -> None:
    prompt, end = TEMPLATES[template]
    assert openrlhf_query(prompt) == "What is 2+2?"
    separated = separate_response(prompt + "It is 4." + end, prompt)
    assert (separated.response, separated.reason, separated.prompt_truncated) == ("It is 4.", None, False)


def test_end_markers_inside_a_response_stay_and_only_trailing_ones_go() -> None:
    assert strip_end_markers("a <|im_end|> b<|im_end|>\n<|endoftext|>") == "a <|im_end|> b"
    assert strip_end_markers("done<|my_end|>") == "done<|my_end|>"
    assert strip_end_markers("done<|my_end|>", (*DEFAULT_END_MARKERS, "<|my_end|>")) == "done"


def test_a_left_truncated_prompt_is_found_by_its_tail_and_flagged() -> None:
    prompt, end = TEMPLATES["chatml"]
    tail = prompt[40:]  # what the policy saw after OpenRLHF cut the prompt's tokens from the left
    separated = separate_response(tail + "It is 4." + end, prompt)
    assert (separated.response, separated.prompt_truncated) == ("It is 4.", True)
    # A cut inside a multi-byte character decodes to U+FFFD first; still found.
    assert separate_response("\ufffd" + tail + "4" + end, prompt).response == "4"
    # Text that merely shares a short ending with the prompt is not taken for a truncated prompt.
    assert separate_response("assistant\n4", prompt).response is None


def _judged(backend: Any) -> list[tuple[str, str]]:
    """(criteria prompt, judged response) of every evaluation turn the backend saw."""
    seen = []
    for conversations, _ in backend.calls:
        for conversation in conversations:
            if len(conversation) > 1:
                match = _RESPONSE.search(conversation[-1]["content"])
                assert match is not None
                seen.append((conversation[0]["content"], match.group(1)))
    return seen


def test_server_judges_a_truncated_prompt_in_full_and_flags_it() -> None:
    judge, backend = mock_judge()
    prompt, end = TEMPLATES["llama3"]
    tail = prompt[-60:]
    body = {"query": [tail + "Four." + end, prompt + "4" + end], "prompts": [prompt, prompt]}
    with RewardServer(create_app(judge, unscorable_reward=-1.0, max_wait_ms=0)) as server:
        data = httpx.post(server.url + "/get_reward", json=body).json()
    assert data["extra_logs"]["cerm_prompt_truncated"] == [1.0, 0.0]
    assert [d["prompt_truncated"] for d in data["cerm"]] == [True, False]
    assert data["extra_logs"]["cerm_scorable"] == [1.0, 1.0]
    judged = _judged(backend)
    assert sorted(r for _, r in judged) == ["4", "Four."]
    assert all("What is 2+2?" in criteria and "Be brief." not in criteria for criteria, _ in judged)


def test_query_field_extra_markers_and_response_fn() -> None:
    judge, backend = mock_judge()
    app = create_app(
        judge,
        unscorable_reward=-1.0,
        max_wait_ms=0,
        query_field="labels",
        end_markers=(*DEFAULT_END_MARKERS, "<|my_end|>"),
        response_fn=lambda text: text.split("</think>")[-1].strip(),
    )
    body = {
        "query": ["P: x<think>hmm</think> Paris<|my_end|>", "P: y Rome<|my_end|>"],
        "prompts": ["P: x", "P: y"],
        "labels": ["Capital of France?", "Capital of Italy?"],
    }
    with RewardServer(app) as server:
        ok = httpx.post(server.url + "/get_reward", json=body)
        missing = httpx.post(server.url + "/get_reward", json={"query": ["P: x a"], "prompts": ["P: x"]})
    assert ok.status_code == 200, ok.text
    assert missing.status_code == 422
    assert "'labels' is required" in missing.json()["error"]
    judged = sorted(_judged(backend), key=lambda j: j[1])
    assert [r for _, r in judged] == ["Paris", "Rome"]
    assert "Capital of France?" in judged[0][0]
    assert "Capital of Italy?" in judged[1][0]
    with pytest.raises(ValueError, match="query_field"):
        create_app(judge, unscorable_reward=0.0, query_field="prompts")


def test_a_failing_response_fn_makes_its_sample_unscorable_only() -> None:
    judge, _ = mock_judge()

    def picky(text: str) -> str:
        if "bad" in text:
            raise ValueError("no final answer")
        return text

    with RewardServer(create_app(judge, unscorable_reward=-1.0, max_wait_ms=0, response_fn=picky)) as server:
        data = httpx.post(server.url + "/get_reward", json={"query": ["P: a", "P: bad"], "prompts": ["P:", "P:"]})
    assert data.json()["extra_logs"]["cerm_scorable"] == [1.0, 0.0]
    assert "no final answer" in data.json()["cerm"][1]["reason"]


def test_load_function_from_a_module_and_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "my_extract.py"
    file.write_text(
        textwrap.dedent(
            """
            def query(prompt):
                return prompt.upper()
            """
        )
    )
    assert load_function(f"{file}:query", "--query-fn")("abc") == "ABC"
    sys.path.insert(0, str(tmp_path))
    try:
        assert load_function("my_extract:query", "--query-fn")("x") == "X"
    finally:
        sys.path.remove(str(tmp_path))
    for spec, needle in [
        ("no_colon", "MODULE:FUNCTION"),
        (f"{tmp_path}/absent.py:f", "no such file"),
        ("cerm_no_such_module_xyz:f", "could not import"),
        (f"{file}:missing", "has no function 'missing'"),
    ]:
        with pytest.raises(InputError, match=needle):
            load_function(spec, "--query-fn")


def test_cerm_serve_options_reach_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cerm serve --query-fn FILE:F --response-fn MODULE:F --end-marker M`: the app uvicorn would run reads samples
    with them (uvicorn.run is replaced by one that keeps the app; the judge is the openai backend on a stub server)."""
    import uvicorn

    from _openai_servers import FaultServer
    from cerm.cli import main

    (tmp_path / "my_hooks.py").write_text(
        "def query(prompt):\n    return prompt.split('Q:')[-1].strip()\n\n"
        "def response(text):\n    return text.removeprefix('A:').strip()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    answers: list[Any] = []
    body = {"query": ["sys Q: Capital of France? A: score=7<|my_end|>"], "prompts": ["sys Q: Capital of France?"]}

    def run_and_ask(app: Any, **kwargs: Any) -> None:  # in place of uvicorn.run: serve the app, send one request
        with RewardServer(app) as server:
            answers.append(httpx.post(server.url + "/get_reward", json=body).json())

    monkeypatch.setattr(uvicorn, "run", run_and_ask)
    with FaultServer().running() as judge_server:
        argv = ["serve", "--unscorable-reward", "0", "--backend", "openai", "--model", "m"]
        argv += ["--backend-arg", f"base_url={judge_server.base_url}", "--max-new-tokens", "16"]
        argv += ["--query-fn", f"{tmp_path / 'my_hooks.py'}:query", "--response-fn", "my_hooks:response"]
        argv += ["--end-marker", "<|my_end|>"]
        assert main(argv) == 0
    data = answers[0]
    assert data["rewards"] == [7.0]
    evaluation = next(s.body["messages"] for s in judge_server.seen if len(s.body["messages"]) > 1)
    assert "[Start of Query]\nCapital of France?\n" in evaluation[0]["content"]  # --query-fn cut "sys Q:"
    match = _RESPONSE.search(evaluation[-1]["content"])
    assert match is not None
    assert match.group(1) == "score=7"
    # Both ways of naming the query at once is a usage error (exit 2), told before anything loads.
    assert main(["serve", "--unscorable-reward", "0", "--query-field", "labels", "--query-fn", "a:b"]) == 2
    assert "give one" in capsys.readouterr().err
