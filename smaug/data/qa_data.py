"""VideoQA and multiple-choice data: JSON rows -> validated rows (bad ones skipped and counted), clips
from a video folder or from shards, an exactly-resumable training loader and per-rank eval shares.

Formats (MSRVTT-QA / ActivityNet-QA and MSRVTT-MC style; extra keys such as "type" are kept):
    QA  [{"video": "x.mp4", "question": "what is ...?", "answer": "dog"}, ...]   + answer_list.json ["dog", ...]
    MC  [{"video": "x.mp4", "caption": ["option 0", ..., "option 4"], "answer": 2}, ...]

Row checks (`read_qa`, `read_mc`): `malformed_row` (not an object, wrong types), `unsafe_path`,
`empty_question`, `empty_answer`, `too_few_options` / `empty_option`, `answer_out_of_range`, and
`missing_file` when a video folder is given and the file is not there. A clip that cannot be decoded
later is skipped and counted under its decode reason. Nothing of this raises.

Clips: `FolderClips` decodes a video file exactly as `smaug.data.json_clips` (and so as a shard of the
same file) does in eval mode: segment-centre frames, short-side resize, centre crop. `ShardClips`
reads every clip of a shard spec once (the eval loader) and finds a row's clip by its shard key
(`shard_key`: the key `tools/make_shards.py` gives a JSON row of that video path).
Training uses the eval-mode decode too (no random crop), so an epoch is a function of the seed.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterator
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset

from .config import MAX_TEXT_LEN

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class BadClip(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _load_list(path: str) -> list:
    with open(path, encoding="utf-8-sig") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list")
    return data


def _video_path(ent) -> tuple[Optional[str], Optional[str]]:
    """(normalised relative path, None) or (None, reason)."""
    from smaug.data.sources import safe_relpath

    video = ent.get("video") if isinstance(ent, dict) else None
    if not isinstance(video, str) or not video.strip():
        return None, "malformed_row"
    rel = safe_relpath(video.strip())
    return (rel, None) if rel else (None, "unsafe_path")


def _check_file(rel: str, video_root: Optional[str]) -> Optional[str]:
    if video_root is not None and not os.path.isfile(os.path.join(video_root, rel)):
        return "missing_file"
    return None


def read_qa(path: str, video_root: Optional[str] = None, require_answer: bool = True) -> tuple[list[dict], Counter]:
    """QA rows -> (good rows with `index` (position in the file), `video` (normalised), `question`,
    `answer` (stripped) and any extra keys; skipped counts by reason)."""
    rows, bad = [], Counter()
    for i, ent in enumerate(_load_list(path)):
        rel, err = _video_path(ent)
        if err is None:
            q, a = ent.get("question"), ent.get("answer")
            if not isinstance(q, str) or (a is not None and not isinstance(a, str)):
                err = "malformed_row"
            elif not q.strip():
                err = "empty_question"
            elif require_answer and (a is None or not a.strip()):
                err = "empty_answer"
            else:
                err = _check_file(rel, video_root)
        if err:
            bad[err] += 1
            continue
        rows.append({**ent, "index": i, "video": rel, "question": q.strip(), "answer": (a or "").strip()})
    return rows, bad


def read_answer_list(path: str) -> list[str]:
    """answer_list.json: a list of strings (stripped; duplicates dropped, first occurrence kept)."""
    seen, out = set(), []
    for a in _load_list(path):
        a = str(a).strip()
        if a and a not in seen:
            seen.add(a)
            out.append(a)
    return out


def read_mc(path: str, video_root: Optional[str] = None, min_options: int = 2) -> tuple[list[dict], Counter]:
    """MC rows -> (good rows with `index`, `video`, `caption` (options) and `answer` (int); skipped counts)."""
    rows, bad = [], Counter()
    for i, ent in enumerate(_load_list(path)):
        rel, err = _video_path(ent)
        if err is None:
            caps, ans = ent.get("caption"), ent.get("answer")
            if (
                not isinstance(caps, list)
                or not all(isinstance(c, str) for c in caps)
                or isinstance(ans, bool)
                or not isinstance(ans, int)
            ):
                err = "malformed_row"
            elif len(caps) < min_options:
                err = "too_few_options"
            elif not all(c.strip() for c in caps):
                err = "empty_option"
            elif not 0 <= ans < len(caps):
                err = "answer_out_of_range"
            else:
                err = _check_file(rel, video_root)
        if err:
            bad[err] += 1
            continue
        rows.append({**ent, "index": i, "video": rel, "caption": [c.strip() for c in caps], "answer": ans})
    return rows, bad


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """This rank's share of n eval items: every world-th from `rank` (disjoint, together all n)."""
    return list(range(rank, n, world))


def shard_key(video: str) -> str:
    """The sample key tools/make_shards.py gives a JSON row of this (normalised) video path."""
    from smaug.data.sources import make_key

    return make_key(posixpath.splitext(video)[0])


# ---------------------------------------------------------------------------- clips
class FolderClips:
    """Clips straight from video files under `root` (picklable: used inside loader workers)."""

    def __init__(self, root: str, num_frames: int, image_size: int, short_side: int):
        self.root, self.num_frames, self.image_size, self.short_side = root, num_frames, image_size, short_side

    def __call__(self, video: str) -> torch.Tensor:
        """-> uint8 [T, 3, S, S]; raises BadClip(reason)."""
        from smaug.data.json_clips import JsonClips
        from smaug.data.sources import Row

        row = Row(index=0, line=1, id=video, key=shard_key(video), captions=["-"], relpath=video)
        out = JsonClips([row], self.root, self.num_frames, self.image_size, self.short_side)[0]
        if isinstance(out, tuple):
            raise BadClip(out[1])
        return out.video


class ShardClips:
    """Every clip of a shard spec, decoded once (eval mode) and kept in memory by key."""

    def __init__(self, spec, data_cfg, tokenizer):
        from smaug.data import build_eval_loader

        self.clips: dict[str, torch.Tensor] = {}
        loader = build_eval_loader(data_cfg, tokenizer, spec, rank=0, world_size=1)
        for batch in loader:
            for k, v in zip(batch["key"], batch["video"]):
                self.clips.setdefault(k, v.clone())
        self.skipped = loader.skip_counts()

    def __call__(self, video: str) -> torch.Tensor:
        clip = self.clips.get(shard_key(video))
        if clip is None:
            raise BadClip("missing_in_shards")
        return clip


def make_clip_source(data_cfg, tokenizer, video_root: Optional[str] = None, shards=None):
    """FolderClips(video_root) or ShardClips(shards), with the frames/size/decode size of `data_cfg`."""
    if (video_root is None) == (shards is None):
        raise ValueError("give exactly one of a video folder or a shard spec")
    if video_root is not None:
        return FolderClips(video_root, data_cfg.num_frames, data_cfg.image_size, data_cfg.short_side)
    return ShardClips(shards, data_cfg, tokenizer)


# ---------------------------------------------------------------------------- batches
class RowClips(Dataset):
    """item i -> (i, row, clip uint8 [T, 3, S, S]) or (i, row, reason) when the clip cannot be used."""

    def __init__(self, rows: list[dict], clips):
        self.rows, self.clips = rows, clips

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item):
        pos, i = item if isinstance(item, tuple) else (None, item)
        row = self.rows[i]
        try:
            return pos, row, self.clips(row["video"])
        except BadClip as e:
            return pos, row, e.reason


def collate_rows(
    items: list, tokenizer, max_text_len: int, text_key: Optional[str] = "question", answer_len: int = 0
) -> tuple[Optional[dict], list[str], Optional[int]]:
    """-> (batch or None, skip reasons, loader position). The batch: `video` uint8 [B, T, 3, S, S], `rows`,
    `key`; with `text_key`, `input_ids` / `attention_mask` of that text; with `answer_len`, `answer_ids` /
    `answer_mask` ([CLS] answer [SEP], at most answer_len tokens)."""
    from smaug.data.collate import tokenize

    good = [(r, c) for _, r, c in items if torch.is_tensor(c)]
    bad = [c for _, _, c in items if not torch.is_tensor(c)]
    pos = items[0][0] if items else None
    if not good:
        return None, bad, pos
    batch = {
        "video": torch.stack([c for _, c in good]),
        "rows": [r for r, _ in good],
        "key": [r["video"] for r, _ in good],
    }
    if text_key:
        batch.update(tokenize(tokenizer, [r[text_key] for r, _ in good], max_text_len))
    if answer_len:
        ans = tokenize(tokenizer, [r["answer"] for r, _ in good], answer_len)
        batch["answer_ids"], batch["answer_mask"] = ans["input_ids"], ans["attention_mask"]
    return batch, bad, pos


class _Collate:
    def __init__(self, tokenizer, max_text_len, text_key, answer_len):
        self.args = (tokenizer, max_text_len, text_key, answer_len)

    def __call__(self, items):
        return collate_rows(items, *self.args)


def eval_batches(
    rows: list[dict],
    clips,
    tokenizer,
    batch_size: int,
    num_workers: int = 0,
    max_text_len: int = MAX_TEXT_LEN,
    text_key: Optional[str] = "question",
    skipped: Optional[Counter] = None,
) -> Iterator[dict]:
    """One ordered pass over `rows` in batches; unusable clips are counted in `skipped` and left out."""
    dl = DataLoader(
        RowClips(rows, clips),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_Collate(tokenizer, max_text_len, text_key, 0),
        generator=torch.Generator().manual_seed(0),
    )
    for batch, bad, _ in dl:
        if skipped is not None:
            skipped.update(bad)
        if batch is not None:
            yield batch


class _Positions:
    """Endless batch sampler from a loader position: [(position, row index), ...] per batch."""

    def __init__(self, loader: QATrainLoader, start: int):
        self.loader, self.start = loader, start

    def __iter__(self):
        p = self.start
        while True:
            yield [(p, i) for i in self.loader.batch_rows(p)]
            p += 1


class QATrainLoader:
    """Endless QA training batches for one rank, exactly resumable.

    Epoch e is a permutation of the rows drawn from (seed, e); global batch j of an epoch is rows
    [j * G, (j + 1) * G) of it (G = batch_size * world, the rest of an epoch is dropped), and rank r takes
    its r-th slice of batch_size. The state is the number of batches handed out, so a resumed loader
    continues with exactly the batches an uninterrupted one would give. Rows whose clip cannot be
    decoded are left out of their batch and counted (`skip_counts`).
    """

    def __init__(
        self,
        rows: list[dict],
        clips,
        tokenizer,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        state: Optional[dict] = None,
        num_workers: int = 0,
        max_text_len: int = MAX_TEXT_LEN,
        max_answer_len: int = 8,
        skipped_rows: Optional[Counter] = None,
    ):
        self.rows, self.clips, self.tokenizer = rows, clips, tokenizer
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world_size, seed
        self.global_batch = batch_size * world_size
        if len(rows) < self.global_batch:
            raise ValueError(f"{len(rows)} usable QA rows, fewer than one global batch ({self.global_batch})")
        self.steps_per_epoch = len(rows) // self.global_batch
        self.num_workers, self.max_text_len, self.max_answer_len = num_workers, max_text_len, max_answer_len
        self.pos = int((state or {}).get("pos", 0))
        self.skipped = Counter((state or {}).get("skipped", {}))
        self.bad_rows = Counter(skipped_rows or {})
        self._perm: tuple[int, list[int]] = (-1, [])

    @property
    def num_samples(self) -> int:
        return len(self.rows)

    def batch_rows(self, pos: int) -> list[int]:
        epoch, j = divmod(pos, self.steps_per_epoch)
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.rows), generator=g).tolist())
        start = j * self.global_batch + self.rank * self.batch_size
        return self._perm[1][start : start + self.batch_size]

    def __iter__(self) -> Iterator[dict]:
        # a private generator for the DataLoader's base seed: the global one is the training RNG (frame
        # selection), and an iterator created on resume would otherwise shift it (as smaug.data.stream)
        dl = DataLoader(
            RowClips(self.rows, self.clips),
            batch_sampler=_Positions(self, self.pos),
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(0),
            collate_fn=_Collate(self.tokenizer, self.max_text_len, "question", self.max_answer_len),
        )
        for batch, bad, pos in dl:
            self.skipped.update(bad)
            self.pos = pos + 1
            if batch is not None:
                batch.pop("rows")
                yield batch

    def state_dict(self) -> dict:
        return {"pos": self.pos, "skipped": dict(self.skipped)}

    def skip_counts(self) -> dict[str, int]:
        return dict(self.bad_rows + self.skipped)
