"""Logs people can read: where output is not a terminal (a Slurm log, `> run.log`), progress is a plain line every
so often (smaug/progress.py), not tqdm's carriage-return redraws with the run's messages glued to them."""

import pytest

import smaug.progress

from conftest import tool_in_process


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


def test_trainer_progress_in_a_log(tmp_path, capfd, every_update, monkeypatch):
    """The trainer's progress (smaug.train.monitor.Monitor, as Trainer builds it) with captured output: plain
    `[smaug] NAME: step/total ...` lines through the trainer's logger, the last record's loss on them."""
    from smaug.config import load_config
    from smaug.train.monitor import Monitor, setup_logging

    monkeypatch.setenv("WANDB_MODE", "disabled")
    setup_logging()
    cfg = load_config(["quickstart"], ["log.every=1", "log.progress=true"], output_dir=str(tmp_path))
    mon = Monitor(tmp_path, cfg, total_steps=3, start_step=0, enabled=True, peak_tflops=1.0)
    for step in (1, 2, 3):
        mon.update(step, clips=16, flops=1e9, data_time=0.0, scalars={"loss": 4.0 - step})
    mon.close()
    out = capfd.readouterr()
    assert "\r" not in out.out + out.err
    progress = [line for line in out.out.splitlines() if line.startswith("[smaug] quickstart: ")]
    assert [p.split(",")[0] for p in progress] == [
        f"[smaug] quickstart: {i}/3 step ({p}%)" for i, p in ((1, 33), (2, 67), (3, 100), (3, 100))
    ]
    assert ", loss=2.000, " in progress[2] and ", loss=1.000, " in progress[3]  # at the end, the final record
