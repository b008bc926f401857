"""A bad config stops the run before any compute, with every problem listed at once (smaug/preflight.py,
smaug.config.validate): missing shards, tokenizer, init checkpoint, an output directory that cannot be written.
Before, a run whose eval corpus did not exist trained until its first evaluation and died there on every rank."""

import pytest

from smaug.config import ConfigError, load_config

from conftest import run_overrides, train_in_process


def test_every_problem_is_listed_in_one_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as e:
        load_config(
            ["quickstart"],
            [
                f"data.train_shards={tmp_path}/train/{{0..3}}.tar",
                "data.eval_shards=corpus:no_such_corpus",
                f"data.shards_root={tmp_path}",
                f"model.tokenizer={tmp_path}/no/tokenizer",
                f"model.init_from={tmp_path}/no_run",
                "optim.lr=-1",
            ],
            output_dir=str(blocker / "out"),
            check_paths=True,
        )
    lines = str(e.value).splitlines()
    assert lines[0] == "7 problems:", str(e.value)  # optim.lr < 0 also puts min_lr out of range
    for key in ("optim.lr", "data.train_shards", "data.eval_shards", "model.tokenizer", "model.init_from"):
        assert any(line.startswith(f"  - {key}: ") for line in lines), (key, lines)
    assert any("run.output_dir" in line and "not a folder" in line for line in lines)


def test_unknown_keys_of_every_section_come_together():
    with pytest.raises(ConfigError) as e:
        load_config(["quickstart"], ["optim.lrr=1", "model.mask_ratioo=0.5", "data.batchsize=2"], "/tmp/x")
    text = str(e.value)
    assert text.startswith("3 problems:") and all(
        k in text for k in ("optim.lrr", "model.mask_ratioo", "data.batchsize")
    )


def test_paths_are_not_checked_when_only_the_schema_is_read(tmp_path):
    """The tools read configs of runs whose data lives elsewhere: only the trainer checks paths."""
    cfg = load_config(["quickstart"], ["data.eval_shards=corpus:elsewhere"], output_dir=str(tmp_path))
    assert cfg.data.eval_shards == "corpus:elsewhere"


def test_run_with_missing_eval_corpus_tokenizer_and_unwritable_output_stops_before_any_step(
    synthetic_shards, tmp_path, capsys
):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "run"
    rc = train_in_process(
        "--config",
        "quickstart",
        "--out",
        out,
        *run_overrides(
            synthetic_shards,
            "data.eval_shards=corpus:not_built_yet",
            f"model.tokenizer={tmp_path}/tokenizer",
            "train.steps=2",
        ),
    )
    cap = capsys.readouterr()
    assert rc == 2
    text = cap.out + cap.err
    assert text.count("config error: 3 problems:") == 1, text
    for what in ("data.eval_shards: corpus:not_built_yet", "model.tokenizer: ", "run.output_dir: "):
        assert f"\n  - {what}" in text, (what, text)  # each on a line of its own
    assert "Traceback" not in text and "step 1" not in text


def test_later_ranks_stay_silent(synthetic_shards, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    rc = train_in_process(
        "--config", "quickstart", "--out", tmp_path, *run_overrides(synthetic_shards, "data.eval_shards=corpus:nope")
    )
    cap = capsys.readouterr()
    assert rc == 2 and "config error" not in cap.out + cap.err


def test_a_videoqa_run_checks_its_own_data_not_the_shards(tmp_path):
    """QA fine-tuning reads qa.* files, not data.train_shards / data.eval_shards (the quickstart's, unbuilt here)."""
    from smaug.eval.qa import QARunConfig

    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(ConfigError) as e:
        load_config(
            ["quickstart", "finetune_qa"],
            [
                "data.train_shards=corpus:not_built",
                f"qa.train_json={tmp_path}/train.json",
                f"qa.video_root={tmp_path}",
                f"model.tokenizer={tmp_path}/tok",
            ],
            output_dir=str(tmp_path / "qa"),
            config_cls=QARunConfig,
            check_paths=True,
        )
    assert str(e.value) == f"qa.train_json: {tmp_path}/train.json does not exist"
