"""smaug.data.tokenizer.build_wordpiece_tokenizer: a vocabulary that is a function of the captions alone."""

from smaug.data import build_wordpiece_tokenizer, load_tokenizer

CAPTIONS = [
    "A red circle moves to the LEFT",
    "the blue square goes up",
    "a red square, moving leftwards",
    "one green triangle slides down",
] * 3


def test_two_builds_write_identical_files_and_ids(tmp_path):
    """The tokenizers WordPieceTrainer broke ties in hash-map order: three builds from the same captions
    gave three vocabularies. Build twice, each in its own process state, and compare bytes."""
    a = build_wordpiece_tokenizer(CAPTIONS, tmp_path / "a", vocab_size=200)
    b = build_wordpiece_tokenizer(list(reversed(CAPTIONS)), tmp_path / "b", vocab_size=200)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a.get_vocab() == b.get_vocab()


def test_vocabulary_layout_and_coverage(tmp_path):
    build_wordpiece_tokenizer(CAPTIONS, tmp_path, vocab_size=200)
    tok = load_tokenizer(tmp_path)
    v = tok.get_vocab()
    assert [v[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    # whole words by frequency, ties by spelling: "a" and "red" (3 x 2 each) before "blue" (3 x 1)
    assert v["a"] < v["blue"] and v["red"] < v["blue"] and v["square"] < v["blue"]
    assert tok.tokenize("A Red circle") == ["a", "red", "circle"]  # lower-cased, whole words
    assert tok.tokenize("reds") == ["red", "##s"]  # an unseen word from its pieces
    assert tok.tokenize("quiz") == ["[UNK]"]  # a character never seen: unknown, as BERT's WordPiece
    assert tok("red circle")["input_ids"] == [2, v["red"], v["circle"], 3]
    alphabet = sorted({c for cap in CAPTIONS for c in cap.lower() if not c.isspace()})
    base = 5 + 2 * len(alphabet)  # specials + every character alone and as ##continuation
    small = build_wordpiece_tokenizer(CAPTIONS, tmp_path / "small", vocab_size=base + 2).get_vocab()
    assert len(small) == base + 2 and {"a", "red"} <= small.keys() and "blue" not in small  # the 2 most frequent
    tiny = build_wordpiece_tokenizer(CAPTIONS, tmp_path / "tiny", vocab_size=10).get_vocab()
    assert len(tiny) == base  # the alphabet is never cut: every word stays encodable
