"""The trainer with pretrained towers (model.vision_init / text_init): a tiny BEiT by name from a
hub-layout HF cache (offline) and a tiny BERT folder holding its tokenizer. Checks init_report.json,
the log's first lines, the mean/std in the resolved config, and the HF export refusing a BEiT tower."""

import json

import pytest
import yaml
from test_train import train

from pretrained_helpers import hub_repo, hub_snapshot, save_timm, timm_reference, tiny_bert_config


@pytest.mark.slow
def test_trainer_loads_pretrained_towers_and_reports(synthetic_shards, hf_cache, tmp_path, capfd):
    from transformers import BertForMaskedLM

    from smaug.data import load_tokenizer
    from smaug.hf.convert import ExportError
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
    assert resolved["overrides"]["mean"] == [0.5] * 3 and resolved["overrides"]["vision_family"] == "beit"

    # the exported code has only the plain ViT block: a BEiT tower is refused before anything is written
    with pytest.raises(ExportError, match="vision_family='beit'"):
        export_hf(str(out), tmp_path / "hf", tokenizer=str(tmp_path / "bert"), verify=False)
    assert not (tmp_path / "hf").exists()
