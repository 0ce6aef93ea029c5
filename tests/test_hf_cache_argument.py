"""The HF backend passes its KV cache the way the installed transformers wants it: no deprecation warning per call.

transformers 5.2x renamed ``past_key_values`` to ``cache`` in ``forward()`` and ``generate()``; the old name prints a
FutureWarning on every call (and is removed in 5.40). Both places the backend hands over a cache are exercised here:
the shared-prefix prefill (a forward pass) and the generation that continues it.
"""

from __future__ import annotations

import warnings

import pytest

from cerm.backends import Backend, SamplingParams


@pytest.mark.model
def test_generation_with_a_shared_prefix_warns_about_no_deprecated_cache_argument(demo_backend: Backend) -> None:
    shared = "You are a careful judge. Read the question and answer briefly. " * 4
    conversations = [[{"role": "user", "content": shared + tail}] for tail in ("What is 2+2?", "Name a colour.")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = demo_backend.generate(conversations, SamplingParams(max_new_tokens=3))
    assert [len(o) for o in out] == [1, 1]
    assert all(o[0].finish_reason in ("stop", "length") for o in out)
    deprecated = [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    assert deprecated == []
    assert getattr(demo_backend, "_share_prefix", False), "the shared-prefix path (a cache handed over) did not run"
