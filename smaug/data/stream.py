"""Train and eval streams over WebDataset shards, with exact resume and an error budget.

Train mode (`build_train_loader`): endless. Each dataloader worker of each rank owns an
independent stream and yields whole batches, so torch's DataLoader serves batch i of a rank from
worker i % num_workers, in order. A worker's stream is cut into rounds of `round_batches`
batches. At the start of round r the worker seeds a generator from (seed, rank, worker, r) and
builds: per corpus, an endless sequence of shards drawn with replacement (weighted by their
sample counts when the manifest gives them), each read start to end with webdataset's tar
reader; a per-sample weighted choice of corpus (mixing); a shuffle buffer. Augmentation
randomness is seeded per sample from (seed, rank, worker, r, raw index in the round), so it does
not depend on which samples were skipped. Every batch carries `__meta__` (worker, round,
batches_in_round, raw_pulled_in_round, cumulative skip counters). `TrainLoader.state_dict()`
keeps, per worker, the meta of the last batch handed to the trainer; restoring restarts each
worker at its round and fast-forwards `raw_pulled_in_round` raw samples (tar bytes only, no
decoding), so a resumed run sees exactly the samples, in the same order and with the same
augmentation, as an uninterrupted one. Corrupt samples are skipped identically on replay
because decoding is deterministic.

Every rank is endless, so uneven shards never make one rank stop early (no hang); an epoch is
a fixed number of steps (`steps_per_epoch`).

Eval mode (`build_eval_loader`): shards are split by rank and then by worker (or, when there
are fewer shards than rank x worker consumers, samples are dealt round-robin), read once, in
order, without shuffling: every sample is seen exactly once across all ranks and workers.
The last batch of each worker may be short.

Corrupt samples are skipped and counted by reason (`skip_counts()`); they never end an epoch.
When more than `error_budget` of the last `error_window` samples a worker tried were corrupt it
raises `DataErrorBudgetExceeded`, naming the shard with the most failures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .collate import collate
from .config import DataConfig
from .decode import CorruptSample, printable
from .isolation import make_decoder
from .specs import ShardSet, resolve_mixture

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
STATE_VERSION = 1
LOG = logging.getLogger("smaug.data")


class DataErrorBudgetExceeded(RuntimeError):
    """Too many corrupt samples in a window; the message names the worst shard."""


class ErrorBudget:
    """Skip counters plus a sliding window of recent outcomes for one worker."""

    def __init__(self, budget: float, window: int, counts: Optional[dict] = None, attempted: int = 0):
        self.budget, self.window = budget, max(1, int(window))
        self.recent: deque = deque(maxlen=self.window)  # None for a good sample, else shard url
        self.counts: Counter = Counter(counts or {})
        self.attempted = attempted
        self.muted = False  # while replaying a round on resume: already counted

    def ok(self) -> None:
        self.attempted += 1
        self.recent.append(None)

    def skip(self, exn: CorruptSample, sample: dict) -> None:
        """A sample the decoder refused: one line naming it and why, then counted."""
        url = sample.get("__url__", "?")
        if not self.muted:
            LOG.warning(
                "skip sample %s (%s): %s: %s", printable(str(sample.get("__key__"))), url, exn.reason, exn.detail
            )
        self.bad(exn.reason, url)

    def bad(self, reason: str, url: str) -> None:
        if self.muted:
            return
        self.attempted += 1
        self.counts[reason] += 1
        self.recent.append(url or "?")
        if len(self.recent) == self.window:
            bad = [u for u in self.recent if u is not None]
            if len(bad) > self.budget * self.window:
                worst, n = Counter(bad).most_common(1)[0]
                raise DataErrorBudgetExceeded(
                    f"{len(bad)} of the last {self.window} samples were corrupt (budget {self.budget:.0%}); "
                    f"worst shard {worst} ({n} failures); skip reasons so far {dict(self.counts)}"
                )


def iter_tar(url: str, budget: ErrorBudget, skip: frozenset = frozenset()) -> Iterator[dict]:
    """Raw samples (`__key__`, `__url__`, member bytes) of one shard via webdataset's reader,
    without the keys in `skip` (found bad by tools/index_shards.py: dropped unread and uncounted).

    A broken tar counts one `tar_error` and ends that shard.
    """
    from webdataset import tariterators as ti

    def handler(exn: Exception) -> bool:
        budget.bad("tar_error", url)
        return False  # stop reading this shard

    streams = ti.url_opener([{"url": url}], handler=handler)
    files = ti.tar_file_expander(streams, handler=handler)
    if not skip:
        yield from ti.group_by_keys(files, handler=handler)
        return
    for sample in ti.group_by_keys(files, handler=handler):
        if sample["__key__"] not in skip:
            yield sample


def _seed(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]))


def _corpus_samples(ss: ShardSet, rng: np.random.Generator, budget: ErrorBudget) -> Iterator[dict]:
    """Endless samples from shards of one corpus drawn with replacement."""
    sizes = np.array([s if s is not None else 1 for s in ss.sizes] or [1] * len(ss.urls), dtype=np.float64)
    if sizes.sum() <= 0:
        raise RuntimeError(f"corpus {ss.name}: every shard is empty")
    p = sizes / sizes.sum()
    empty = 0
    while True:
        url = ss.urls[int(rng.choice(len(ss.urls), p=p))]
        n = 0
        for sample in iter_tar(url, budget, ss.skip.get(url, frozenset())):
            n += 1
            yield sample
        empty = empty + 1 if n == 0 else 0
        if empty > max(20, 2 * len(ss.urls)):
            raise RuntimeError(f"corpus {ss.name}: {empty} shard draws in a row gave no samples (last {url})")


def _mixed(corpora: list[ShardSet], rng: np.random.Generator, budget: ErrorBudget) -> Iterator[dict]:
    its = [_corpus_samples(c, rng, budget) for c in corpora]
    w = np.array([c.weight for c in corpora], dtype=np.float64)
    w /= w.sum()
    while True:
        yield next(its[int(rng.choice(len(its), p=w))] if len(its) > 1 else its[0])


def _shuffled(src: Iterator[dict], size: int, rng: np.random.Generator) -> Iterator[dict]:
    if size <= 1:
        yield from src
        return
    buf: list = []
    for x in src:
        if len(buf) < size:
            buf.append(x)
            continue
        i = int(rng.integers(len(buf)))
        yield buf[i]
        buf[i] = x


def _worker_identity(offset: int) -> tuple[int, int]:
    info = get_worker_info()
    if info is None:
        return 0, 1
    return (info.id + offset) % info.num_workers, info.num_workers


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class TrainStream(IterableDataset):
    """The per-worker endless batch stream of one rank (see module docstring)."""

    def __init__(self, cfg: DataConfig, corpora: list[ShardSet], tokenizer, rank: int, world_size: int, seed: int):
        super().__init__()
        self.cfg, self.corpora, self.tokenizer = cfg, corpora, tokenizer
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.start: dict[int, dict] = {}  # logical worker -> meta of its last consumed batch
        self.offset = 0  # physical worker i plays logical worker (i + offset) % num_workers

    def __iter__(self) -> Iterator[dict]:
        worker, _ = _worker_identity(self.offset)
        st = self.start.get(worker)
        cfg = self.cfg
        if st is None:
            rnd, done, pulled, counts, attempted = 0, 0, 0, {}, 0
        else:
            rnd, done, pulled = st["round"], st["batches_in_round"], st["raw_pulled_in_round"]
            counts, attempted = st["skips"], st.get("attempted", 0)
            if done >= cfg.round_batches:
                rnd, done, pulled = rnd + 1, 0, 0
        budget = ErrorBudget(cfg.error_budget, cfg.error_window, counts, attempted)
        decode_sample, close = make_decoder(cfg)
        try:
            yield from self._rounds(cfg, worker, rnd, done, pulled, budget, decode_sample)
        finally:
            close()

    def _rounds(self, cfg, worker, rnd, done, pulled, budget, decode_sample) -> Iterator[dict]:
        while True:
            rng = _seed(self.seed, self.rank, worker, rnd)
            stream = _shuffled(_mixed(self.corpora, rng, budget), cfg.shuffle_buffer, rng)
            budget.muted = True
            for _ in range(pulled):  # fast-forward: tar bytes only, nothing is decoded
                next(stream)
            budget.muted = False
            batch = []
            while done < cfg.round_batches:
                raw = next(stream)
                srng = _seed(self.seed, self.rank, worker, rnd, pulled, 0x5A)
                pulled += 1
                try:
                    batch.append(
                        decode_sample(
                            raw,
                            cfg.num_frames,
                            cfg.image_size,
                            cfg.short_side,
                            srng,
                            cfg.crop_scale,
                            cfg.crop_ratio,
                            cfg.decoder,
                        )
                    )
                except CorruptSample as exn:
                    budget.skip(exn, raw)
                    continue
                budget.ok()
                if len(batch) == cfg.batch_size:
                    done += 1
                    out = collate(batch, self.tokenizer, cfg.max_text_len)
                    out["__meta__"] = {
                        "worker": worker,
                        "round": rnd,
                        "batches_in_round": done,
                        "raw_pulled_in_round": pulled,
                        "skips": dict(budget.counts),
                        "attempted": budget.attempted,
                    }
                    batch = []
                    yield out
            rnd, done, pulled = rnd + 1, 0, 0


def _fingerprint(cfg: DataConfig, corpora: list[ShardSet], rank: int, world_size: int, seed: int) -> str:
    blob = json.dumps(
        {
            "corpora": [[c.name, c.urls, round(c.weight, 9)] for c in corpora],
            "batch_size": cfg.batch_size,
            "num_workers": cfg.num_workers,
            "round_batches": cfg.round_batches,
            "shuffle_buffer": cfg.shuffle_buffer,
            "rank": rank,
            "world_size": world_size,
            "seed": seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _dataloader(ds: IterableDataset, cfg: DataConfig, pin_memory: bool = False) -> DataLoader:
    # A private generator for the DataLoader's base seed: drawing it from the global RNG would
    # shift the training RNG (masking, MLM) whenever an iterator is created, e.g. on resume.
    # Workers seed everything they use from (seed, rank, worker, round) anyway.
    kw: dict[str, Any] = {"generator": torch.Generator().manual_seed(0)}
    if cfg.num_workers > 0:
        kw.update(worker_init_fn=_worker_init, prefetch_factor=cfg.prefetch_factor)
    return DataLoader(ds, batch_size=None, num_workers=cfg.num_workers, pin_memory=pin_memory, **kw)


class TrainLoader:
    """Endless iterable of training batches for one rank, with `state_dict()` for exact resume.

    Every `iter()` continues from the current position (after the last batch handed out), so
    `for step, batch in zip(range(steps_per_epoch), loader)` per epoch wastes nothing.
    """

    def __init__(
        self,
        cfg: DataConfig,
        tokenizer,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        state: Optional[dict] = None,
        pin_memory: bool = False,
    ):
        self.cfg = cfg
        self.pin_memory = pin_memory  # page-locked batches (CUDA): asynchronous host-to-device copies
        self.corpora = resolve_mixture(cfg.train_shards, cfg.shards_root)
        self.dataset = TrainStream(cfg, self.corpora, tokenizer, rank, world_size, seed)
        self.fingerprint = _fingerprint(cfg, self.corpora, rank, world_size, seed)
        self.consumed = 0
        self.workers: dict[int, dict] = {}
        if state is not None:
            self.load_state_dict(state)

    @property
    def num_samples(self) -> Optional[int]:
        """Training samples over all corpora (from manifests), None when unknown."""
        counts = [c.num_samples for c in self.corpora]
        return None if any(n is None for n in counts) else int(sum(counts))  # type: ignore[arg-type]

    @property
    def steps_per_epoch(self) -> Optional[int]:
        """`cfg.steps_per_epoch`, else ceil(samples / (batch_size * world_size))."""
        if self.cfg.steps_per_epoch > 0:
            return self.cfg.steps_per_epoch
        n = self.num_samples
        return None if n is None else max(1, math.ceil(n / (self.cfg.batch_size * self.dataset.world_size)))

    def __iter__(self) -> Iterator[dict]:
        w = max(1, self.cfg.num_workers)
        self.dataset.start = {int(k): v for k, v in self.workers.items()}
        self.dataset.offset = self.consumed % w
        it = iter(_dataloader(self.dataset, self.cfg, self.pin_memory))
        try:
            for batch in it:
                meta = batch["__meta__"]
                self.workers[int(meta["worker"])] = {
                    k: meta[k] for k in ("round", "batches_in_round", "raw_pulled_in_round", "skips", "attempted")
                }
                self.consumed += 1
                yield batch
        finally:
            del it  # shuts the worker processes down

    def skip_counts(self) -> dict[str, int]:
        """Corrupt samples skipped so far, by reason, summed over this rank's workers."""
        total: Counter = Counter()
        for st in self.workers.values():
            total.update(st["skips"])
        return dict(total)

    def state_dict(self) -> dict:
        """JSON-able position after the batches handed out so far (one per rank)."""
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "consumed": self.consumed,
            "workers": {str(k): v for k, v in sorted(self.workers.items())},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} != {STATE_VERSION}")
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                "loader state was saved with other shards, batch_size, num_workers, round_batches, "
                "shuffle_buffer, rank, world_size or seed; exact resume needs the same ones"
            )
        self.consumed = int(state["consumed"])
        self.workers = {int(k): dict(v) for k, v in state["workers"].items()}


class EvalStream(IterableDataset):
    """Each sample of the eval shards exactly once over all ranks x workers, in order."""

    def __init__(
        self, cfg: DataConfig, urls: list[str], tokenizer, rank: int, world_size: int, skip: Optional[dict] = None
    ):
        super().__init__()
        self.cfg, self.urls, self.tokenizer = cfg, urls, tokenizer
        self.skip = skip or {}  # url -> keys dropped unread (ShardSet.skip)
        self.rank, self.world_size = rank, world_size

    def _mine(self) -> Iterator[dict]:
        worker, nworkers = _worker_identity(0)
        budget = self.budget
        consumers = self.world_size * nworkers
        if len(self.urls) >= consumers:
            for url in self.urls[self.rank :: self.world_size][worker::nworkers]:
                yield from iter_tar(url, budget, self.skip.get(url, frozenset()))
        else:
            me = self.rank * nworkers + worker
            i = 0
            for url in self.urls:
                for raw in iter_tar(url, budget, self.skip.get(url, frozenset())):
                    if i % consumers == me:
                        yield raw
                    i += 1

    def __iter__(self) -> Iterator[dict]:
        cfg = self.cfg
        self.budget = ErrorBudget(cfg.error_budget, cfg.error_window)
        worker, _ = _worker_identity(0)
        bs = cfg.eval_batch_size or cfg.batch_size
        decode_sample, close = make_decoder(cfg)
        try:
            yield from self._batches(cfg, worker, bs, decode_sample)
        finally:
            close()

    def _batches(self, cfg, worker, bs, decode_sample) -> Iterator[dict]:
        batch = []
        for raw in self._mine():
            try:
                batch.append(
                    decode_sample(raw, cfg.num_frames, cfg.image_size, cfg.short_side, None, decoder=cfg.decoder)
                )
            except CorruptSample as exn:
                self.budget.skip(exn, raw)
                continue
            self.budget.ok()
            if len(batch) == bs:
                yield self._emit(batch, worker)
                batch = []
        if batch:
            yield self._emit(batch, worker)

    def _emit(self, batch: list, worker: int) -> dict:
        out = collate(batch, self.tokenizer, self.cfg.max_text_len, with_captions=True)
        out["__meta__"] = {"worker": worker, "skips": dict(self.budget.counts), "attempted": self.budget.attempted}
        return out


class EvalLoader:
    """One pass over the eval shards for one rank (re-iterable)."""

    def __init__(self, cfg: DataConfig, tokenizer, shards: Any = None, rank: int = 0, world_size: int = 1):
        spec = shards if shards is not None else cfg.eval_shards
        sets = resolve_mixture(spec, cfg.shards_root)
        self.cfg = cfg
        self.urls = [u for s in sets for u in s.urls]
        self.num_samples = None if any(s.num_samples is None for s in sets) else sum(s.num_samples for s in sets)
        self.dataset = EvalStream(
            cfg, self.urls, tokenizer, rank, world_size, {u: k for s in sets for u, k in s.skip.items()}
        )
        self.workers: dict[int, dict] = {}

    def __iter__(self) -> Iterator[dict]:
        self.workers = {}
        for batch in _dataloader(self.dataset, self.cfg):
            meta = batch["__meta__"]
            self.workers[int(meta["worker"])] = meta
            yield batch

    def skip_counts(self) -> dict[str, int]:
        """Corrupt samples skipped in the current/last pass, by reason."""
        total: Counter = Counter()
        for st in self.workers.values():
            total.update(st["skips"])
        return dict(total)


def build_train_loader(
    cfg: DataConfig,
    tokenizer,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    state: Optional[dict] = None,
    pin_memory: bool = False,
) -> TrainLoader:
    """Endless training loader for one rank; `state` is a previous `loader.state_dict()`;
    `pin_memory` hands out page-locked batches (for asynchronous copies to a GPU)."""
    if cfg.train_shards is None:
        raise ValueError("DataConfig.train_shards is not set")
    return TrainLoader(cfg, tokenizer, rank, world_size, seed, state, pin_memory)


def build_eval_loader(cfg: DataConfig, tokenizer, shards: Any = None, rank: int = 0, world_size: int = 1) -> EvalLoader:
    """Eval loader for one rank: with all ranks together every sample exactly once."""
    return EvalLoader(cfg, tokenizer, shards, rank, world_size)
