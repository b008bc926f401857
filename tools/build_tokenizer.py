#!/usr/bin/env python
"""Build a BERT-style WordPiece tokenizer from a corpus's captions, fully offline.

    python tools/build_tokenizer.py --shards SPEC --out DIR [--vocab-size 8000]
    python tools/build_tokenizer.py --captions FILE [--captions FILE ...] --out DIR

--shards reads the `.txt` captions (and the extra `captions` of `.json`) of every shard of a
spec (brace pattern, directory, manifest.json or corpus:NAME; repeatable). --captions reads a
WebVid CSV (`name` column), an eval JSON (`caption`), an image list TSV (first column), or any
other file as one caption per line. The result loads with
`transformers.AutoTokenizer.from_pretrained(DIR)` or `smaug.data.load_tokenizer(DIR)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from smaug.data.config import default_shards_root
from smaug.data.sources import read_rows
from smaug.data.specs import resolve_spec
from smaug.data.tokenizer import build_wordpiece_tokenizer


def shard_captions(spec: str, root: str) -> Iterator[str]:
    """Captions stored in the shards of `spec`, read with webdataset's tar reader."""
    from webdataset import tariterators as ti

    def wanted(name: str) -> bool:
        return name.endswith((".txt", ".json"))

    for url in resolve_spec(spec, root).urls:
        files = ti.tar_file_expander(ti.url_opener([{"url": url}]), select_files=wanted)
        for sample in ti.group_by_keys(files):
            caps = []
            if "json" in sample:
                caps = json.loads(sample["json"].decode("utf-8")).get("captions") or []
            if "txt" in sample and not caps:
                caps = [sample["txt"].decode("utf-8")]
            yield from caps


def file_captions(path: str) -> Iterator[str]:
    """Captions of a listing file (see module docstring for the formats)."""
    suffix = Path(path).suffix.lower()
    kind = {".csv": "webvid", ".json": "json", ".tsv": "images"}.get(suffix)
    if kind is None:
        with open(path, encoding="utf-8") as f:
            yield from (line.strip() for line in f if line.strip())
        return
    for row in read_rows(kind, path):
        yield from row.captions


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", action="append", default=[], help="shard spec to read captions from")
    p.add_argument("--captions", action="append", default=[], help="caption listing file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--vocab-size", type=int, default=8000, help="WordPiece vocabulary size (upper bound)")
    p.add_argument("--min-frequency", type=int, default=1, help="minimum pair frequency for merges")
    p.add_argument("--shards-root", default=default_shards_root(), help="root for corpus:NAME and relative specs")
    return p


def main(argv=None) -> int:
    p = arg_parser()
    args = p.parse_args(argv)
    if not args.shards and not args.captions:
        p.error("give --shards and/or --captions")
    count = 0

    def captions() -> Iterator[str]:
        nonlocal count
        for spec in args.shards:
            for c in shard_captions(spec, args.shards_root):
                count += 1
                yield c
        for path in args.captions:
            for c in file_captions(path):
                count += 1
                yield c

    tok = build_wordpiece_tokenizer(captions(), args.out, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    print(f"[build_tokenizer] {count} captions -> vocab {len(tok)} in {args.out}", file=sys.stderr)
    return 0 if count else 2


if __name__ == "__main__":
    sys.exit(main())
