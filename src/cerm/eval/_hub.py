"""Benchmarks loaded from where users get them: the Hugging Face Hub (``datasets.load_dataset`` with a pinned revision),
with ``$CERM_DATA_DIR``, a local folder or file, or a ``datasets.Dataset`` as overrides.

Each preset names its hub dataset, split and revision, and an adapter turns the raw rows (the schema the authors
publish) into :class:`~cerm.eval.EvalItem` s. Local files go through the same ``load_dataset`` call (``"json"`` or
``"parquet"`` builder), so a copy of the hub files, or the authors' own release files, load exactly like the hub. A
folder holding ``all.jsonl`` in cerm's normalized preference schema is read as such.

``datasets`` is imported only here and only when a benchmark is loaded: ``pip install 'ce-rm[eval]'``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cerm.eval._data import DATA_DIR_ENV, DataError, EvalItem, build_items, load_rows, select_items
from cerm.eval._presets import preset_name

logger = logging.getLogger("cerm")

RM_BENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")
_DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_JB_CATEGORY = {
    "mmlu-pro": "knowledge",
    "livebench-reasoning": "reasoning",
    "livebench-math": "math",
    "livecodebench": "coding",
}


#: The hub's default branch: what a preset without a pinned commit loads (the commit it resolves to is recorded).
DEFAULT_BRANCH = "main"
_FULL_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubSource:
    """Where a benchmark lives on the Hugging Face Hub.

    ``revision`` is a full dataset commit the preset is pinned to, or None where no full commit id could be found
    (cerm was written without hub access): the default branch is loaded then, and the commit it resolves to is recorded
    in the run's provenance. ``written_against`` is the commit prefix the hub's pages showed when the preset's adapter
    was written (information only: it is never sent to the hub; a load that resolves elsewhere logs a warning). Pass
    another revision with ``revision=`` / ``--revision``.
    """

    hub_id: str
    splits: tuple[str, ...]
    revision: str | None
    config: str | None = None
    subset_prefix: str | None = None  # keep only rows whose ``subset`` starts with this (LLMBar inside RewardBench)
    folders: tuple[str, ...] = ()  # folder names looked up under $CERM_DATA_DIR
    written_against: str | None = None
    # A benchmark published as several hub datasets (PPE: one per source set) lists them here, each with its own
    # revision; ``part`` is such a dataset's name within its benchmark (the set name its rows are tagged with).
    parts: tuple[HubSource, ...] = ()
    part: str | None = None

    def __post_init__(self) -> None:
        if self.revision is not None and not _FULL_COMMIT.fullmatch(self.revision):
            raise ValueError(f"{self.hub_id}: a pinned revision must be a full 40-character commit id")

    def url(self) -> str:
        return f"https://huggingface.co/datasets/{self.hub_id}"


def _ppe_part(name: str, revision: str | None, written_against: str | None) -> HubSource:
    hub_id = f"lmarena-ai/PPE-{name}-Best-of-K"
    folder = f"ppe-correctness/PPE-{name}-Best-of-K"
    return HubSource(hub_id, ("train",), revision, folders=(folder,), written_against=written_against, part=name)


# Pins are full commit ids found in published material (none could be checked against the hub from the machine cerm
# was written on). RewardBench 2: the commit whose dataset card other projects cite
# (huggingface.co/datasets/allenai/reward-bench-2/raw/7ff08853b0d5686e79b13fda8677024f566a104a/README.md), which is the
# "7ff0885" the hub's page showed. RewardBench: the commit in the hub's own history URL
# (huggingface.co/datasets/allenai/reward-bench/commits/8def74f33ce5c3b78bafcbed9a7a1887f427701b/data). RM-Bench and
# JudgeBench: only the short ids the hub's pages print were found, so no pin: the default branch, resolved at load.
# PPE: one dataset per set. GPQA's full commit is in the hub's own tree URL
# (huggingface.co/datasets/lmarena-ai/PPE-GPQA-Best-of-K/tree/b24236a5e93649b7875155c8669d1ecd1aff3112, its "Upload
# dataset" commit; later commits changed README.md only); for the others only the short ids of the hub's pages were
# found (MBPP-Plus: none for its main branch), so they load the default branch, resolved at load.
HUB_SOURCES: dict[str, HubSource] = {
    "rewardbench2": HubSource(
        "allenai/reward-bench-2",
        ("test",),
        "7ff08853b0d5686e79b13fda8677024f566a104a",
        folders=("rewardbench2", "reward-bench-2"),
    ),
    "rewardbench": HubSource(
        "allenai/reward-bench",
        ("filtered",),
        "8def74f33ce5c3b78bafcbed9a7a1887f427701b",
        folders=("rewardbench", "reward-bench"),
    ),
    "rm-bench": HubSource(
        "THU-KEG/RM-Bench", ("train",), None, folders=("rm-bench", "rm_bench"), written_against="ee19843"
    ),
    "judgebench": HubSource(
        "ScalerLab/JudgeBench", ("gpt", "claude"), None, folders=("judgebench",), written_against="57dd5e0"
    ),
    "llmbar": HubSource(
        "allenai/reward-bench",
        ("filtered",),
        "8def74f33ce5c3b78bafcbed9a7a1887f427701b",
        subset_prefix="llmbar-",
        folders=("llmbar",),
    ),
    "ppe-correctness": HubSource(
        "lmarena-ai/PPE-{set}-Best-of-K",
        ("train",),
        None,
        folders=("ppe-correctness", "ppe"),
        parts=(
            _ppe_part("MMLU-Pro", None, "d3a309b"),
            _ppe_part("MATH", None, "c46ce3c"),
            _ppe_part("GPQA", "b24236a5e93649b7875155c8669d1ecd1aff3112", None),
            _ppe_part("IFEval", None, "a4f7fae"),
            _ppe_part("MBPP-Plus", None, None),
        ),
    ),
}


@dataclass(frozen=True)
class BenchmarkData:
    """A loaded benchmark: its items and where they came from (recorded in the run's manifest and report)."""

    benchmark: str
    items: list[EvalItem]
    provenance: dict[str, Any]


# -- adapters: one raw row -> one item ---------------------------------------------------------------------------------
def _text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {key!r} must be a non-empty string")
    return value


def _texts(row: Mapping[str, Any], key: str, where: str, size: int | None = None) -> list[str]:
    value = row.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: {key!r} must be a non-empty list of strings")
    if size is not None and len(value) != size:
        raise DataError(f"{where}: {key!r} must hold {size} answers, got {len(value)}")
    return list(value)


def _item(
    iid: str,
    prompt: str,
    chosen: Sequence[str],
    rejected: Sequence[str],
    *,
    category: str,
    subset: str,
    source: str,
    meta: Mapping[str, Any] | None = None,
    styles: Sequence[str | None] | None = None,
) -> EvalItem:
    return EvalItem(
        id=iid,
        source=source,
        category=category,
        subset=subset,
        prompt=prompt,
        candidates=(*chosen, *rejected),
        labels=("chosen",) * len(chosen) + ("rejected",) * len(rejected),
        styles=tuple(styles) if styles is not None else (None,) * (len(chosen) + len(rejected)),
        meta=dict(meta or {}),
    )


def adapt_rewardbench2(row: Mapping[str, Any], where: str) -> EvalItem:
    """``id``, ``prompt``, ``chosen`` (list), ``rejected`` (list), ``subset`` (Ties ids read ``ref:N`` / ``tied:N``)."""
    subset = _text(row, "subset", where)
    raw_id = str(row.get("id", where))
    return _item(
        f"rewardbench2-{subset}-{raw_id}",
        _text(row, "prompt", where),
        _texts(row, "chosen", where),
        _texts(row, "rejected", where),
        category=subset,
        subset=subset,
        source="rewardbench2",
        meta={"rb2_id": raw_id},
    )


def adapt_rewardbench(row: Mapping[str, Any], where: str) -> EvalItem:
    """``id``, ``prompt``, ``chosen`` (str), ``rejected`` (str), ``subset``."""
    subset = _text(row, "subset", where)
    return _item(
        f"rewardbench-{subset}-{row.get('id', where)}",
        _text(row, "prompt", where),
        [_text(row, "chosen", where)],
        [_text(row, "rejected", where)],
        category=subset,
        subset=subset,
        source="rewardbench",
    )


def adapt_rm_bench(row: Mapping[str, Any], where: str) -> EvalItem:
    """``id``, ``prompt``, ``chosen`` and ``rejected`` (3 each: concise, detailed plain, detailed markdown),
    ``domain``."""
    domain = _text(row, "domain", where)
    return _item(
        f"rmbench-{domain}-{row.get('id', where)}",
        _text(row, "prompt", where),
        _texts(row, "chosen", where, 3),
        _texts(row, "rejected", where, 3),
        category=domain,
        subset=domain,
        source="rm-bench",
        styles=RM_BENCH_STYLES * 2,
    )


def adapt_judgebench(row: Mapping[str, Any], where: str) -> EvalItem:
    """``pair_id``, ``source``, ``question``, ``response_model``, ``response_A``, ``response_B``, ``label``
    (``A>B`` / ``B>A``: which response is right). The label is kept: the single-game rule needs the positions."""
    label = row.get("label")
    if label not in ("A>B", "B>A"):
        raise DataError(f"{where}: 'label' must be 'A>B' or 'B>A', got {label!r}")
    a, b = _text(row, "response_A", where), _text(row, "response_B", where)
    chosen, rejected = (a, b) if label == "A>B" else (b, a)
    source = _text(row, "source", where)
    model = str(row.get("response_model") or "unknown")
    category = next((c for prefix, c in _JB_CATEGORY.items() if source.startswith(prefix)), source)
    return _item(
        f"judgebench-{model}-{row.get('pair_id', where)}",
        _text(row, "question", where),
        [chosen],
        [rejected],
        category=category,
        subset=source,
        source="judgebench",
        meta={"response_model": model, "label": label, "pair_id": row.get("pair_id")},
    )


def adapt_llmbar(row: Mapping[str, Any], where: str) -> EvalItem:
    """LLMBar's release schema: ``input``, ``output_1``, ``output_2``, ``label`` (1 or 2), the subset from the file's
    folder (``Dataset/LLMBar/Adversarial/Neighbor/dataset.json``) or a ``subset`` column; RewardBench's rows (the hub
    default) go through :func:`adapt_rewardbench`."""
    if "output_1" not in row:
        return adapt_rewardbench(row, where)
    from cerm.eval._presets import llmbar_subset

    label = row.get("label")
    if label not in (1, 2, "1", "2"):
        raise DataError(f"{where}: 'label' must be 1 or 2, got {label!r}")
    one, two = _text(row, "output_1", where), _text(row, "output_2", where)
    chosen, rejected = (one, two) if str(label) == "1" else (two, one)
    subset = llmbar_subset(str(row.get("subset") or row.get("_folder") or "unknown"))
    return _item(
        f"llmbar-{subset}-{row.get('_index', where)}",
        _text(row, "input", where),
        [chosen],
        [rejected],
        category="llmbar",
        subset=subset,
        source="llmbar",
        meta={"label": int(label)},
    )


def _ppe_set_of(row: Mapping[str, Any], where: str) -> str:
    """The PPE set a row belongs to: the hub dataset it was read from, the ``DatasetDict`` split it came in, or a folder
    of its file's path (``PPE-MATH-Best-of-K/data/train-...parquet`` or ``MATH/...``)."""
    from cerm.eval._presets import PPE_SETS

    by_name = {s.lower(): s for s in PPE_SETS} | {f"ppe-{s.lower()}-best-of-k": s for s in PPE_SETS}
    for key in ("_set", "_split"):
        value = str(row.get(key) or "").lower()
        if value in by_name:
            return by_name[value]
    for key in ("_file", "_folder"):
        for part in reversed(Path(str(row.get(key) or "")).parts):
            if part.lower() in by_name:
                return by_name[part.lower()]
    raise DataError(
        f"{where}: no PPE set for this row: give each set's files in a folder named after it "
        "(DIR/PPE-MATH-Best-of-K/ as the hub download writes it, or DIR/MATH/), or a DatasetDict keyed by set name"
    )


def adapt_ppe(row: Mapping[str, Any], where: str) -> EvalItem:
    """PPE's best-of-K rows: ``prompt``, ``question_id``, ``model_name``, ``response_1`` ... ``response_K`` and
    ``scores`` (K booleans: is each response correct). Correct responses are ``chosen``, incorrect ones ``rejected``,
    in the row's order (so the first k are the first k responses)."""
    name = _ppe_set_of(row, where)
    responses: list[str] = []
    while f"response_{len(responses) + 1}" in row:
        key = f"response_{len(responses) + 1}"
        value = row[key]
        if not isinstance(value, str):
            raise DataError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
        responses.append(value)
    if not responses:
        raise DataError(f"{where}: no 'response_1': not a PPE best-of-K row")
    scores = row.get("scores")
    if (
        not isinstance(scores, (list, tuple))
        or len(scores) != len(responses)
        or not all(isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)) for v in scores)
    ):
        raise DataError(f"{where}: 'scores' must hold one boolean per response ({len(responses)}), got {scores!r:.80}")
    question = row.get("question_id", row.get("_index", where))
    model = str(row.get("model_name") or "unknown")
    return EvalItem(
        id=f"ppe-{name}-{question}-{model}",
        source="ppe-correctness",
        category=name,
        subset=name,
        prompt=_text(row, "prompt", where),
        candidates=tuple(responses),
        labels=tuple("chosen" if v else "rejected" for v in scores),
        styles=(None,) * len(responses),
        meta={"response_model": model, "question_id": question},
    )


def first_k(item: EvalItem, k: int) -> EvalItem:
    """The item with only its first ``k`` candidates (a best-of-K row judged as best-of-k, to keep cost down)."""
    return dataclasses.replace(item, candidates=item.candidates[:k], labels=item.labels[:k], styles=item.styles[:k])


ADAPTERS: dict[str, Callable[[Mapping[str, Any], str], EvalItem]] = {
    "rewardbench2": adapt_rewardbench2,
    "rewardbench": adapt_rewardbench,
    "rm-bench": adapt_rm_bench,
    "judgebench": adapt_judgebench,
    "llmbar": adapt_llmbar,
    "ppe-correctness": adapt_ppe,
}


# -- sources -----------------------------------------------------------------------------------------------------------
def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(
            "loading a benchmark needs the 'datasets' package: pip install 'ce-rm[eval]' (or datasets); "
            "or give a JSONL file in cerm's normalized schema"
        ) from None
    return datasets


def _data_files(folder: Path) -> dict[str, list[str]]:
    """Data files under ``folder`` grouped by split, the split being the file name up to its first '-' or '.'
    (``gpt-00000-of-00001.jsonl`` -> ``gpt``), as the hub's own layout names them."""
    groups: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)  # .cache/ of a hub download
        if path.is_file() and path.suffix in _DATA_SUFFIXES and not hidden:
            split = re.split(r"[-.]", path.name, maxsplit=1)[0] or "train"
            groups.setdefault(split, []).append(str(path))
    return groups


def _load_files(files: Sequence[str], root: Path) -> list[dict[str, Any]]:
    datasets = _import_datasets()
    rows: list[dict[str, Any]] = []
    for file in files:
        builder = _DATA_SUFFIXES[Path(file).suffix]
        try:
            table = datasets.load_dataset(builder, data_files=file, split="train")
        except Exception as exc:  # any reader failure names the file; the cause stays chained
            raise DataError(f"{file}: could not be read as {builder} ({type(exc).__name__}: {exc})") from exc
        relative = Path(file).resolve().parent.relative_to(root.resolve()) if root.is_dir() else Path()
        for index, raw in enumerate(table):
            rows.append({**raw, "_folder": str(relative).replace(os.sep, "/"), "_index": index, "_file": file})
    return rows


def _adapt_all(name: str, rows: Iterable[Mapping[str, Any]], label: str, hub: HubSource) -> list[EvalItem]:
    adapter = ADAPTERS[name]
    items = []
    for n, row in enumerate(rows):
        if hub.subset_prefix and "output_1" not in row and not str(row.get("subset", "")).startswith(hub.subset_prefix):
            continue
        items.append(adapter(row, f"{label} row {n}"))
    if not items:
        raise DataError(f"{label}: no {name} rows found")
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{label}: duplicate item id {dup!r}")
    return items


def _from_path(name: str, path: Path, hub: HubSource) -> tuple[list[EvalItem], dict[str, Any]]:
    if path.is_dir() and (path / "all.jsonl").is_file():
        path = path / "all.jsonl"
    if path.is_file() and path.name == "all.jsonl":
        # cerm's normalized preference schema: read by the plain JSONL reader.
        items = build_items(load_rows(path))
        return items, {"source": "local", "path": str(path), "schema": "cerm normalized JSONL"}
    if path.is_file():
        if path.suffix not in _DATA_SUFFIXES:
            raise DataError(f"{path}: not a .jsonl, .json or .parquet file")
        files = [str(path)]
        root = path.parent
    elif path.is_dir():
        groups = _data_files(path)
        if not groups:
            raise DataError(f"{path}: no .jsonl, .json or .parquet files in this folder")
        # the preset's splits when the folder names them (the hub's layout), LLMBar's release files (dataset.json,
        # not the evaluators' result files beside them), else every data file
        wanted = [s for s in (*hub.splits, "dataset") if s in groups]
        files = [f for s in (wanted or sorted(groups)) for f in groups[s]]
        root = path
    else:
        raise DataError(f"{path}: no such file or folder")
    items = _adapt_all(name, _load_files(files, root), str(path), hub)
    return items, {"source": "local", "path": str(path), "files": [str(Path(f).relative_to(root)) for f in files]}


def _resolve_revision(hub: HubSource, revision: str) -> tuple[str | None, str | None]:
    """The commit ``revision`` (a branch, tag or commit) points to on the hub, so every split is read from that one
    commit and the run records which it was: ``(commit, None)``, or ``(None, why not)`` when the hub cannot be asked
    (offline: ``datasets`` may still have the data in its cache)."""
    try:
        from huggingface_hub import HfApi

        commit = HfApi().dataset_info(hub.hub_id, revision=revision).sha
    except Exception as exc:  # offline, unknown revision, hub error: the load below says what went wrong, if it does
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(commit, str) or not commit:
        return None, "the hub returned no commit id"
    if hub.written_against and revision == DEFAULT_BRANCH and not commit.startswith(hub.written_against):
        logger.warning(
            "%s: the hub's %s is now commit %s; cerm's adapter was written against %s: if loading fails or the "
            "numbers look off, pass --revision %s",
            hub.hub_id,
            DEFAULT_BRANCH,
            commit,
            hub.written_against,
            hub.written_against,
        )
    return commit, None


def _hub_rows(name: str, hub: HubSource, revision: str, splits: Sequence[str]) -> list[dict[str, Any]]:
    datasets = _import_datasets()
    rows: list[dict[str, Any]] = []
    # A part of a benchmark goes into its own folder of DIR (DIR/PPE-MATH-Best-of-K), so every part fits in one DIR.
    local_dir = f"DIR/{Path(hub.folders[0]).name}" if hub.part else "DIR"
    for split in splits:
        try:
            table = datasets.load_dataset(hub.hub_id, hub.config, split=split, revision=revision)
        except Exception as exc:  # offline, unknown revision, hub error: say what was asked and how to go local
            raise DataError(
                f"could not load {name} from the Hugging Face Hub ({hub.hub_id}, split {split!r}, revision "
                f"{revision!r}): {type(exc).__name__}: {exc}. Offline? Download it where you have network "
                f"(huggingface-cli download --repo-type dataset {hub.hub_id} --revision {revision} "
                f"--local-dir {local_dir}) and pass the folder (cerm eval --benchmark {name} --data DIR, or "
                f"load_benchmark({name!r}, DIR)), or set ${DATA_DIR_ENV} to a folder holding {hub.folders[0]}/"
            ) from exc
        tag = {"_set": hub.part} if hub.part else {}
        rows.extend({**raw, "_index": i, **tag} for i, raw in enumerate(table))
    return rows


def _hub_provenance(
    hub: HubSource, splits: Sequence[str], requested: str, commit: str | None, unresolved: str | None
) -> dict[str, Any]:
    provenance: dict[str, Any] = {
        "hub_id": hub.hub_id,
        "config": hub.config,
        "splits": list(splits),
        "revision": requested,
        "resolved_revision": commit,
        "url": hub.url(),
    }
    if unresolved is not None:
        provenance["revision_note"] = f"not resolved to a commit ({unresolved}); loaded as {requested!r}"
    return provenance


def _from_hub(
    name: str, hub: HubSource, revision: str | None, splits: Sequence[str]
) -> tuple[list[EvalItem], dict[str, Any]]:
    """Every split of the preset's dataset read from the one commit ``revision`` (or its pin, or the default branch)
    resolves to; a benchmark made of several datasets (``parts``) reads each the same way and records each."""
    if not hub.parts:
        requested = revision or hub.revision or DEFAULT_BRANCH
        commit, unresolved = _resolve_revision(hub, requested)
        rows = _hub_rows(name, hub, commit or requested, splits)
        return _adapt_all(name, rows, hub.hub_id, hub), {
            "source": "hub",
            **_hub_provenance(hub, splits, requested, commit, unresolved),
        }
    known = [p.part for p in hub.parts]
    unknown = [s for s in splits if s not in known and s not in hub.splits]
    if unknown:
        raise DataError(f"{name}: no part(s) {', '.join(unknown)}; its parts are {', '.join(map(str, known))}")
    chosen = [p for p in hub.parts if p.part in splits] or list(hub.parts)
    rows = []
    parts: list[dict[str, Any]] = []
    for part in chosen:
        requested = revision or part.revision or DEFAULT_BRANCH
        commit, unresolved = _resolve_revision(part, requested)
        rows.extend(_hub_rows(name, part, commit or requested, part.splits))
        parts.append({"part": part.part, **_hub_provenance(part, part.splits, requested, commit, unresolved)})
    return _adapt_all(name, rows, hub.hub_id, hub), {"source": "hub", "hub_id": hub.hub_id, "parts": parts}


def load_benchmark(
    name: str,
    source: str | os.PathLike[str] | Any | None = None,
    *,
    revision: str | None = None,
    splits: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int | None = None,
    k: int | None = None,
) -> BenchmarkData:
    """Load a benchmark preset's items and say where they came from.

    Where from, first match wins:

    1. ``source``: a local file or folder (the hub's files, the authors' release files, or cerm's normalized
       ``all.jsonl``), or a ``datasets.Dataset`` / ``DatasetDict`` / list of dicts in the benchmark's raw schema;
    2. ``$CERM_DATA_DIR/<name>/`` when it exists;
    3. the Hugging Face Hub: the preset's dataset and splits, at its pinned commit or, for a preset without one, the
       default branch (override with ``revision=``). The commit the revision resolves to is asked of the hub first,
       every split is read from it, and it is recorded (``provenance["resolved_revision"]``). A benchmark published
       as several datasets (``ppe-correctness``: one per set) reads each so and records each under
       ``provenance["parts"]``; ``splits`` names the parts to read there (``["MATH", "GPQA"]``; default all).

    ``k`` keeps only the first ``k`` responses of each row of a best-of-K benchmark (``ppe-correctness``), to keep the
    cost down. ``limit`` and ``seed`` cut a slice (see :func:`cerm.eval.select_items`).
    """
    canonical = preset_name(name)
    hub = HUB_SOURCES[canonical]
    if k is not None and not hub.parts:
        raise DataError(f"k (the first k responses of a best-of-K row) applies to ppe-correctness, not {canonical}")
    if k is not None and k < 2:
        raise DataError(f"k must be >= 2 (a best-of-k choice needs two responses), got {k}")
    wanted_splits = tuple(splits) if splits else hub.splits
    provenance: dict[str, Any]
    if source is not None and not isinstance(source, (str, os.PathLike)):
        items, provenance = _from_object(canonical, source, hub, wanted_splits)
    else:
        path = Path(source) if source is not None else _data_dir_folder(hub)
        if path is not None:
            items, provenance = _from_path(canonical, path, hub)
        else:
            items, provenance = _from_hub(canonical, hub, revision, wanted_splits)
    provenance = {"benchmark": canonical, **provenance}
    if k is not None:
        items = [first_k(item, k) for item in items]
        provenance["k"] = k
    return BenchmarkData(canonical, select_items(items, limit, seed), provenance)


def _data_dir_folder(hub: HubSource) -> Path | None:
    env = os.environ.get(DATA_DIR_ENV)
    if not env:
        return None
    for folder in hub.folders:
        candidate = Path(env) / folder
        if candidate.exists():
            return candidate
    return None


def _from_object(
    name: str, source: Any, hub: HubSource, splits: Sequence[str]
) -> tuple[list[EvalItem], dict[str, Any]]:
    if isinstance(source, Mapping):  # a DatasetDict: take the preset's splits that it has
        chosen = [s for s in splits if s in source] or list(source)
        rows = [{**raw, "_index": i, "_split": s} for s in chosen for i, raw in enumerate(source[s])]
        origin = f"the given dataset dict (splits {', '.join(chosen)})"
    elif isinstance(source, Iterable):
        rows = [{**raw, "_index": i} for i, raw in enumerate(source)]
        origin = f"the given {type(source).__name__}"
    else:
        raise DataError(f"source must be a path, a datasets.Dataset or DatasetDict, or a list of dicts, got {source!r}")
    if rows and "rejected" in rows[0] and isinstance(rows[0].get("rejected"), list) and "category" in rows[0]:
        items = build_items(load_rows(rows))  # cerm's normalized schema
    else:
        items = _adapt_all(name, rows, origin, hub)
    fingerprint = getattr(source, "_fingerprint", None)
    return items, {"source": "dataset", "object": type(source).__name__, "fingerprint": fingerprint}
