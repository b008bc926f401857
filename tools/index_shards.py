#!/usr/bin/env python
"""Index WebDataset shards that smaug did not write (video2dataset output, or any
`{key}.mp4|.jpg + .txt|.json` layout) so the loader can train on them.

    python tools/index_shards.py SHARDS [--out DIR] [--caption-field txt|json:NAME] [--rewrite]
                                 [--decoder decord|pyav|torchcodec] [--timeout S] [--workers N]

SHARDS: a directory of *.tar, a brace pattern (`dir/{00000..00099}.tar`) or a list of tars.
Every sample is test-decoded as the loader decodes it, in a forked child with a time limit, so a
video that crashes or hangs the decoder is counted (`decoder_crash`, `decode_timeout`), not fatal.
Bad samples are counted per reason (failed_download, missing_media, missing_caption, bad_caption,
bad_json, decode_error, decoder_crash, decode_timeout, duplicate_key) in DIR/summary.json.

Without --rewrite the tars stay as they are: DIR/manifest.json (DIR = the shard folder by
default) names them with their good-sample counts and lists the bad samples' keys, which the
loader drops unread. With --rewrite, clean shards in smaug's layout go to --out (needed when the
caption lives in the json: --caption-field json:caption).

Then: data.train_shards=DIR (or a corpus YAML naming DIR/manifest.json).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time


def expand(specs: list[str]) -> list[str]:
    import braceexpand

    out = []
    for s in specs:
        if os.path.isdir(s):
            out += sorted(glob.glob(os.path.join(s, "*.tar")))
        else:
            out += [u for part in s.split("::") for u in braceexpand.braceexpand(part)]
    missing = [t for t in out if not os.path.isfile(t)]
    if missing:
        raise SystemExit(f"index_shards: {len(missing)} shard(s) not found, e.g. {missing[0]}")
    if not out:
        raise SystemExit(f"index_shards: no .tar files in {specs}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards", nargs="+", help="shard directory, brace pattern or tar files")
    p.add_argument("--out", help="where manifest.json/summary.json (and --rewrite shards) go [the shards' folder]")
    p.add_argument("--caption-field", default="txt", help="txt (the .txt member) or json:NAME [txt]")
    p.add_argument("--rewrite", action="store_true", help="write clean shards in smaug's layout to --out")
    p.add_argument(
        "--decoder",
        default="decord",
        choices=("decord", "pyav", "torchcodec"),
        help="decoder the test decode uses (train with the same data.decoder) [decord]",
    )
    p.add_argument("--num-frames", type=int, default=4, help="frames the test decode reads per clip [4]")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one sample may take to decode [60]")
    p.add_argument("--workers", type=int, default=1, help="shards indexed in parallel [1]")
    args = p.parse_args(argv)
    from smaug.data.decoders import check_decoder
    from smaug.data.index import index_shards

    tars = expand(args.shards)
    out = args.out or os.path.dirname(os.path.abspath(tars[0]))
    if args.rewrite and not args.out:
        raise SystemExit("index_shards: --rewrite needs --out (the original tars are never overwritten)")
    if args.rewrite and any(os.path.abspath(os.path.dirname(t)) == os.path.abspath(out) for t in tars):
        raise SystemExit("index_shards: --out must differ from the shards' folder with --rewrite")
    try:
        check_decoder(args.decoder)
    except ValueError as exn:
        raise SystemExit(f"index_shards: {exn}") from None
    t0 = time.perf_counter()
    try:
        man, summary = index_shards(
            tars,
            out,
            args.caption_field,
            args.decoder,
            args.num_frames,
            args.timeout,
            args.rewrite,
            args.workers,
            command=" ".join(["tools/index_shards.py", *sys.argv[1:]]),
        )
    except ValueError as exn:
        raise SystemExit(f"index_shards: {exn}") from None
    dt = time.perf_counter() - t0
    bad = {k: v for k, v in summary["skipped"].items() if v}
    total = man["num_samples"] + man["num_skipped"]
    print(
        f"[index_shards] {len(tars)} shards, {total} samples: {man['num_samples']} good, {man['num_skipped']} bad "
        f"{bad or ''} in {dt:.1f}s ({total / max(dt, 1e-9):.1f} samples/s) -> {out}/manifest.json"
    )
    return 0 if man["num_samples"] else 2


if __name__ == "__main__":
    sys.exit(main())
