"""An eval loader straight from an MSRVTT/DiDeMo-style JSON + video folder (no shards needed).

    [{"video": "relative/path.mp4", "caption": "a caption" | ["caption 1", "caption 2", ...]}, ...]

Rows are read by `smaug.data.sources.read_rows("json", ...)` and each clip goes through exactly what a
shard sample of the same row goes through: `transcode.sample_members` (probe, stored bytes and
size metadata, as `tools/make_shards.py` writes them without re-encoding) and then
`decode.decode_sample` in eval mode (segment-centre frames, short-side resize, centre crop), so
`--json` and `--shards` made from the same JSON give the same clips. Batches are the loader's
(`collate(..., with_captions=True)`). Ranks take every world_size-th clip; every clip is read once
over all ranks. Unusable rows are skipped and counted by reason (`skip_counts()`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset

from .config import MAX_TEXT_LEN


class JsonClips(Dataset):
    def __init__(self, rows, video_root: str, num_frames: int, image_size: int, short_side: int):
        self.rows, self.root = rows, video_root
        self.num_frames, self.image_size, self.short_side = num_frames, image_size, short_side

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        """-> Decoded, or (row key, reason) when the clip cannot be used."""
        from smaug.data.decode import CorruptSample, decode_sample
        from smaug.data.transcode import BadSample, sample_members

        row = self.rows[i]
        try:
            members, meta = sample_members(row, self.root)
        except BadSample as e:
            return (row.key or row.id, e.reason)
        info = dict(meta, id=row.id, source=row.relpath)
        if len(row.captions) > 1:
            info["captions"] = row.captions
        sample = {
            "__key__": row.key,
            **members,
            "txt": row.captions[0].encode("utf-8"),
            "json": json.dumps(info, sort_keys=True, ensure_ascii=False).encode("utf-8"),
        }
        try:
            return decode_sample(sample, self.num_frames, self.image_size, self.short_side, None)
        except CorruptSample as e:
            return (row.key, e.reason)


class JsonEvalLoader:
    """One pass over this rank's share of the JSON's clips, in batches (re-iterable)."""

    def __init__(
        self,
        json_path: str,
        video_root: str,
        tokenizer,
        num_frames: int,
        image_size: int,
        short_side: int,
        batch_size: int,
        num_workers: int = 0,
        max_text_len: int = MAX_TEXT_LEN,
        rank: int = 0,
        world_size: int = 1,
    ):
        from smaug.data.sources import read_rows

        rows = read_rows("json", json_path)  # duplicates marked and keys assigned as make_shards does
        self.bad_rows = Counter(r.error[0] for r in rows if r.error is not None)
        good = [r for r in rows if r.error is None]
        self.num_samples = len(good)
        self.dataset = JsonClips(good[rank::world_size], video_root, num_frames, image_size, short_side)
        self.tokenizer, self.max_text_len = tokenizer, max_text_len
        self.batch_size, self.num_workers = batch_size, num_workers
        self.skipped: Counter = Counter()

    def _collate(self, items: list):
        from smaug.data.collate import collate

        good = [x for x in items if not isinstance(x, tuple)]
        bad = [x[1] for x in items if isinstance(x, tuple)]
        return (collate(good, self.tokenizer, self.max_text_len, with_captions=True) if good else None), bad

    def __iter__(self) -> Iterator[dict]:
        self.skipped = Counter()
        dl = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self._collate,
        )
        for batch, bad in dl:
            self.skipped.update(bad)
            if batch is not None:
                yield batch

    def skip_counts(self) -> dict[str, int]:
        """Rows skipped: malformed in the JSON (all ranks) plus clips this rank could not use."""
        return dict(self.bad_rows + self.skipped)


def build_json_eval_loader(
    json_path: str, video_root: str, data_cfg, tokenizer, rank: int = 0, world_size: int = 1
) -> JsonEvalLoader:
    """A `JsonEvalLoader` with the frame count, size, decode size, batch size and workers of `data_cfg`."""
    return JsonEvalLoader(
        json_path,
        video_root,
        tokenizer,
        data_cfg.num_frames,
        data_cfg.image_size,
        data_cfg.short_side,
        data_cfg.eval_batch_size or data_cfg.batch_size,
        data_cfg.num_workers,
        data_cfg.max_text_len,
        rank,
        world_size,
    )
