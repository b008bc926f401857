"""data.isolate_decode: a sample whose decoder hangs or kills its process is skipped and counted
(decode_timeout / decoder_crash), the loader goes on, every good sample is still seen once, and
resume stays exact. The faulty decoder is a real reader class (decord underneath) named through
data.decoder = "module:Class"; it hangs or SIGKILLs its own process on marked bytes."""

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from smaug.data import DataConfig, build_eval_loader, build_train_loader
from smaug.data.shardwriter import SampleTarWriter
from smaug.data.tokenizer import load_tokenizer

FAULTY = """
import os, signal, time
from smaug.data.decoders import DecordReader

class Faulty(DecordReader):
    def __init__(self, data, width, height):
        if data.endswith(b"SMAUG-TEST-HANG"):
            time.sleep(3600)
        if data.endswith(b"SMAUG-TEST-CRASH"):
            os.kill(os.getpid(), signal.SIGKILL)
        super().__init__(data, width, height)
"""


def importable_by_decode_process(monkeypatch, folder) -> None:
    """Modules in `folder` can be imported by a decode process (a fresh interpreter: PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def poisoned(synthetic_shards, tmp_path, monkeypatch):
    """A 10-sample shard whose samples 3 and 7 hang / kill the faulty decoder; -> (dir, bad keys, good keys)."""
    (tmp_path / "faulty_reader.py").write_text(FAULTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    importable_by_decode_process(monkeypatch, tmp_path)
    src = sorted(Path(synthetic_shards["train"]).glob("*.tar"))[:2]
    samples = {}
    for tar in src:
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    keys = sorted(samples)[:10]
    out = tmp_path / "poisoned"
    out.mkdir()
    bad = {keys[3]: b"SMAUG-TEST-HANG", keys[7]: b"SMAUG-TEST-CRASH"}
    with open(out / "p-000000.tar", "wb") as f:
        w = SampleTarWriter(f)
        for k in keys:
            s = dict(samples[k])
            if k in bad:
                s["mp4"] += bad[k]
            w.write({"__key__": k, **s})
        w.close()
    return out, set(bad), set(keys) - set(bad)


def _cfg(shards, **kw):
    return DataConfig(
        num_frames=4,
        image_size=32,
        batch_size=4,
        max_text_len=16,
        decoder="faulty_reader:Faulty",
        isolate_decode=True,
        decode_timeout=2,  # each hang costs this wait (5 hangs in the resume test); a 32 px decode takes ~0.1 s (the
        # decode process's start-up is not counted), ~0.3 s on 2 busy cores
        error_budget=0.5,
        error_window=10,
        **kw,
    )


@pytest.mark.slow
def test_hang_and_crash_are_counted_and_every_good_sample_is_seen(synthetic_shards, poisoned):
    shards, bad, good = poisoned
    tok = load_tokenizer(synthetic_shards["tokenizer"])
    loader = build_eval_loader(_cfg(shards, eval_shards=str(shards), num_workers=1), tok)
    keys = [k for b in loader for k in b["key"]]
    assert sorted(keys) == sorted(good)
    assert loader.skip_counts() == {"decode_timeout": 1, "decoder_crash": 1}


@pytest.mark.slow
def test_isolated_train_stream_resumes_exactly(synthetic_shards, poisoned):
    shards, bad, good = poisoned
    tok = load_tokenizer(synthetic_shards["tokenizer"])
    cfg = _cfg(shards, train_shards=str(shards), num_workers=1, shuffle_buffer=4, round_batches=2)
    loader = build_train_loader(cfg, tok, seed=11)
    it = iter(loader)
    first = [next(it) for _ in range(2)]
    state = json.loads(json.dumps(loader.state_dict()))
    cont = [next(it) for _ in range(3)]  # one pass of the 10-sample shard meets both bad samples
    del it
    seen = [k for b in first + cont for k in b["key"]]
    assert not set(seen) & bad
    skips = cont[-1]["__meta__"]["skips"]
    assert skips.get("decode_timeout", 0) >= 1 and skips.get("decoder_crash", 0) >= 1
    resumed = build_train_loader(cfg, tok, seed=11, state=state)
    digest = [(b["key"], hashlib.sha1(b["video"].numpy().tobytes()).hexdigest()) for _, b in zip(range(3), resumed)]
    assert digest == [(b["key"], hashlib.sha1(b["video"].numpy().tobytes()).hexdigest()) for b in cont]


def test_isolated_frames_equal_in_process_frames(synthetic_shards):
    """The decode process returns exactly what decode_sample returns in the worker."""
    tok = load_tokenizer(synthetic_shards["tokenizer"])
    kw = dict(
        eval_shards=synthetic_shards["eval"], num_frames=4, image_size=32, batch_size=5, max_text_len=16, num_workers=0
    )
    a = {k: v for b in build_eval_loader(DataConfig(**kw), tok) for k, v in zip(b["key"], b["video"])}
    b_ = {
        k: v
        for b in build_eval_loader(DataConfig(isolate_decode=True, **kw), tok)
        for k, v in zip(b["key"], b["video"])
    }
    assert sorted(a) == sorted(b_) and all(a[k].equal(b_[k]) for k in a)


def test_decode_process_answers_without_importing_torch(synthetic_shards):
    """The decode process imports no torch (the worker resizes), so its start and every restart after a bad
    sample cost the decoder's imports only: after a real decode, no libtorch is mapped into it."""
    from smaug.data.decode import decode_sample
    from smaug.data.isolation import DecodeServer
    from smaug.data.stream import ErrorBudget, iter_tar

    tar = sorted(Path(synthetic_shards["eval"]).glob("*.tar"))[0]
    sample = next(iter_tar(str(tar), ErrorBudget(0.0, 1)))  # a raw sample, as the loader reads it
    server = DecodeServer(timeout=60)
    try:
        got = server.decode(sample, 4, 32, 0, None)
        maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    finally:
        server.close()
    assert got.video.equal(decode_sample(sample, 4, 32, 0, None).video) and got.video.shape == (4, 3, 32, 32)
    assert "libtorch" not in maps and "libdecord" in maps


def test_decoder_imports_are_not_counted_in_the_first_samples_time(synthetic_shards, tmp_path, monkeypatch):
    """The decode process imports the decoder (module and backend) before it reports ready: a decoder
    module that takes longer to import than decode_timeout still decodes the first sample after a start
    (CI once lost a good first sample to decord's import on 2 busy cores)."""
    from smaug.data.decode import decode_sample
    from smaug.data.isolation import DecodeServer
    from smaug.data.stream import ErrorBudget, iter_tar

    (tmp_path / "slow_reader.py").write_text(
        "import time\nfrom smaug.data.decoders import DecordReader\ntime.sleep(3)\nclass Slow(DecordReader):\n    pass\n"
    )
    importable_by_decode_process(monkeypatch, tmp_path)
    tar = sorted(Path(synthetic_shards["eval"]).glob("*.tar"))[0]
    sample = next(iter_tar(str(tar), ErrorBudget(0.0, 1)))
    server = DecodeServer(timeout=2, decoder="slow_reader:Slow")
    try:
        got = server.decode(sample, 4, 32, 0, None, decoder="slow_reader:Slow")
        maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    finally:
        server.close()
    assert got.video.equal(decode_sample(sample, 4, 32, 0, None).video)
    assert "libdecord" in maps  # the backend under the class was loaded too


def test_a_decoder_the_decode_process_cannot_import_fails_at_start():
    from smaug.data.isolation import DecodeServer

    server = DecodeServer(timeout=2, decoder="no_such_module_smaug:Reader")
    with pytest.raises(RuntimeError, match="did not start: .*no_such_module_smaug"):
        server._start()
