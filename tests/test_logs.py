"""Logs people can read: where output is not a terminal (a Slurm log, `> run.log`), progress is a plain line every
so often (smaug/progress.py), not tqdm's carriage-return redraws with the run's messages glued to them."""

import pytest

import smaug.progress

from conftest import run_overrides, tool_in_process, train_in_process


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(smaug.progress, "EVERY_S", 0.0)  # a line per update, so that a short run shows several


def test_plain_progress_lines():
    lines = []
    bar = smaug.progress.PlainProgress(10, "step", "run", initial=2, write=lines.append, every_s=0)
    for i in range(3):
        bar.set_postfix(loss=f"{1.0 / (i + 1):.3f}")
        bar.update(2)
    bar.close()  # nothing new since the last line: no repeat
    assert len(lines) == 3 and lines[-1].startswith("run: 8/10 step (80%), ") and "left" in lines[-1]
    assert lines[-1].endswith(", loss=0.333")
    quiet = smaug.progress.PlainProgress(None, "video", write=lines.append, every_s=3600)
    quiet.update(5)
    quiet.close()  # the interval never passed: close shows the end
    assert lines[-1].startswith("5 video, ")


def test_make_shards_progress_in_a_log(synthetic_corpus, tmp_path, every_update):
    r = tool_in_process(
        "make_shards.py",
        "--webvid-csv",
        synthetic_corpus / "results_2M_train.csv",
        "--video-root",
        synthetic_corpus / "videos",
        "--out",
        tmp_path / "shards",
        "--samples-per-shard",
        12,
    )
    text = r.stdout + r.stderr
    assert r.returncode == 0 and "\r" not in text, text
    done = [int(line.split("/")[0]) for line in text.splitlines() if "/36 video (" in line]
    assert len(done) >= 2 and done == sorted(set(done)) and done[-1] == 36, text  # live counts, then the end
    assert "36/36 video (100%), " in text


def test_trainer_progress_in_a_log(synthetic_shards, tmp_path, capfd, every_update):
    rc = train_in_process(
        "--config",
        "quickstart",
        "--out",
        tmp_path,
        *run_overrides(
            synthetic_shards, "train.steps=3", "log.progress=true", "ckpt.every=100", "data.eval_shards=null"
        ),
    )
    out = capfd.readouterr()
    assert rc == 0, out.err
    text = out.out + out.err
    assert "\r" not in text
    progress = [line for line in out.out.splitlines() if line.startswith("[smaug] quickstart: ")]
    assert [p.split(",")[0] for p in progress] == [
        f"[smaug] quickstart: {i}/3 step ({p}%)" for i, p in ((1, 33), (2, 67), (3, 100))
    ]
    assert "loss=" in progress[-1]
