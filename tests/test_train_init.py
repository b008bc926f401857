"""The trainer with pretrained towers (model.vision_init / text_init): a tiny BEiT by name from a
hub-layout HF cache (offline) and a tiny BERT folder holding its tokenizer. Checks init_report.json,
the log's first lines, the mean/std in the resolved config; then the run's Hugging Face export (BEiT tower)
loaded without smaug, and retrieval and QA fine-tuning started from that export."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_train import train

from conftest import tool_in_process
from export_helpers import assert_same_outputs, fresh_outputs, library_outputs
from pretrained_helpers import hub_repo, hub_snapshot, save_timm, timm_reference, tiny_bert_config


@pytest.mark.slow
def test_trainer_loads_pretrained_towers_and_reports(synthetic_shards, hf_cache, tmp_path, capfd, forked_steps):
    from transformers import BertForMaskedLM

    from smaug.checkpoint import model_from_checkpoint
    from smaug.data import load_tokenizer
    from smaug.hf.export import export_hf

    name, ref, config = timm_reference("beit")
    save_timm(hub_snapshot(hf_cache, hub_repo(name)), ref, config)
    tok = load_tokenizer(synthetic_shards["tokenizer"])
    BertForMaskedLM(tiny_bert_config(len(tok))).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")  # the tokenizer follows text_init when model.tokenizer is not set
    out = tmp_path / "run"
    text = train(  # `python -m smaug.train ...` as main(argv), in this process
        capfd,
        synthetic_shards,
        out,
        "data.eval_shards=null",
        f"model.vision_init={name}",
        f"model.text_init={tmp_path / 'bert'}",
        "model.tokenizer=null",
        "model.allow_random_init=false",
        "train.steps=1",
        "data.batch_size=2",
        "data.shuffle_buffer=4",
        "optim.warmup_steps=0",
    )

    report = json.loads((out / "init_report.json").read_text())
    v, t = report["vision"], report["text"]
    assert v["family"] == "beit" and v["where"] == f"hub cache ({hub_repo(name)})" and report["random_init"] == []
    assert report["mean"] == [0.5] * 3 and report["std"] == [0.5] * 3
    assert set(v["new"]) == {"temporal_embed", "norm.weight", "norm.bias"}
    assert t["new"] and all(".crossattention." in k for k in t["new"]) and t["source"] == str(tmp_path / "bert")
    said = [line for line in text.splitlines() if line.startswith("[smaug]")]
    assert said[0].startswith(f"[smaug] init vision: beit {name}") and said[1].startswith("[smaug] init text:")
    assert "mean [0.5, 0.5, 0.5]" in said[2]
    resolved = yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert resolved["mean"] == [0.5] * 3 and resolved["vision_family"] == "beit"

    # the BEiT-initialised run leaves the toolkit: its export, loaded by transformers where smaug cannot be
    # imported, computes what the library computes from the checkpoint
    hf = tmp_path / "hf"
    info = export_hf(str(out), hf, tokenizer=str(tmp_path / "bert"))
    assert info["max_abs_diff"] < 1e-5 and info["run"]["vision_init"] == name
    assert info["run"]["text_init"] == "bert"  # a local path, reduced to its last component
    assert str(tmp_path) not in "".join(
        p.read_text(errors="replace") for p in hf.iterdir() if p.suffix != ".safetensors"
    )
    model, cfg, _, _ = model_from_checkpoint(str(out), str(tmp_path / "bert"))
    assert cfg.vision_family == "beit" and not cfg.vision_abs_pos and cfg.vision_layer_scale > 0
    enc = tok(["a red circle moves to the left", "blue square"], padding=True, return_tensors="pt")
    video = torch.randint(0, 256, (2, 4, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    [got] = fresh_outputs([hf], [video], enc["input_ids"], enc["attention_mask"], tmp_path)
    assert_same_outputs(got, library_outputs(model, video, enc["input_ids"], enc["attention_mask"]), "beit run")

    # downstream fine-tuning starts from that export (a few steps each: that it starts from every weight)
    c = Path(synthetic_shards["corpus"])
    common = ["--video-root", c / "videos", "--k", 4, "optim.warmup_steps=0", "log.progress=false"]
    common += ["data.batch_size=2", "data.num_workers=1"]
    r = tool_in_process(
        "finetune_retrieval.py", "--init", hf, "--out", tmp_path / "ft", "--train-json", c / "eval.json",
        "--eval-json", c / "eval.json", *common, "train.steps=2", "eval.every=0", "ckpt.every=1000",
    )  # fmt: skip
    assert f"initialised from {hf}" in r.stdout + r.stderr
    assert json.loads((tmp_path / "ft" / "finetune_report.json").read_text())["finetuned"]["protocol"]["step"] == 2
    r = tool_in_process(
        "finetune_qa.py", "--init", hf, "--out", tmp_path / "qa", "--train-json", c / "qa_train.json",
        "--test-json", c / "qa_test.json", "--answer-list", c / "answer_list.json", *common, "train.steps=2",
    )  # fmt: skip
    assert f"initialised from {hf} (missing 0 besides the answer decoder" in r.stdout + r.stderr
    assert json.loads((tmp_path / "qa" / "qa_report.json").read_text())["protocol"]["step"] == 2
