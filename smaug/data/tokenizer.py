"""Offline tokenizer: build a BERT-style WordPiece tokenizer from captions, and load tokenizers.

`build_wordpiece_tokenizer(captions, out_dir)` builds a WordPiece vocabulary with the `tokenizers`
library's BERT pieces (BERT normaliser with lowercasing, BERT pre-tokeniser, special tokens
[PAD]=0, [UNK], [CLS], [SEP], [MASK], post-processor `[CLS] $A [SEP]`) and saves it as a
`BertTokenizerFast`, so `transformers.AutoTokenizer.from_pretrained(out_dir)` loads it with no
network.

The vocabulary is a function of the captions alone: the special tokens, every character alone and
as a `##` continuation (so any word is covered), then whole words by frequency, ties by spelling,
up to `vocab_size`. Not `tokenizers.trainers.WordPieceTrainer`: its merges break ties in hash-map
order, so three builds from the same captions gave three different vocabularies (and ids), and
every run trained on them differed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_wordpiece_tokenizer(
    captions: Iterable[str],
    out_dir: str | os.PathLike,
    vocab_size: int = 8000,
    min_frequency: int = 1,
    model_max_length: int = 512,
):
    """Build the WordPiece vocabulary of `captions` (see the module docstring), save to `out_dir`, and
    return the fast tokenizer. Words seen fewer than `min_frequency` times are left to the characters."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for c in captions:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(c)))
    chars = sorted({ch for w in words for ch in w})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{ch}" for ch in chars)]
    known = set(vocab)
    for w, n in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size or n < min_frequency:
            break
        if w not in known:
            vocab.append(w)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        do_lower_case=True,
        model_max_length=model_max_length,
    )
    assert fast.pad_token_id == 0, "[PAD] must be id 0"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def _auto_map(folder: Path) -> dict:
    """The `auto_map` of a folder's config.json ({} without one)."""
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def load_tokenizer(name_or_path: str | os.PathLike):
    """A fast tokenizer from a local directory, or a hub name (hub only when online; with
    `HF_HUB_OFFLINE=1` a hub name must already be in the local cache)."""
    from transformers import AutoTokenizer, PretrainedConfig

    path = Path(name_or_path)
    if path.is_dir():
        kw = {}
        if "AutoConfig" in _auto_map(path):  # a model folder with custom code (a smaug export): transformers'
            # AutoTokenizer would read config.json first and ask to run that code; the tokenizer is all in
            # tokenizer_config.json, so a blank model config stands in
            kw["config"] = PretrainedConfig()
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True, **kw)
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        tok = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=offline, use_fast=True)
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{name_or_path}: a fast tokenizer is required")
    for attr in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
        if getattr(tok, attr) is None:
            raise ValueError(f"{name_or_path}: tokenizer has no {attr[:-3]}")
    return tok


def tokenizer_fields(tok) -> dict:
    """The `SmaugConfig` fields a tokenizer fixes: vocabulary size and the special-token ids."""
    return dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        mask_token_id=tok.mask_token_id,
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
    )
