"""Open-ended VideoQA: answer decoder and ranking (smaug.models.answer_decoder), QA data (smaug.data.qa_data),
fine-tuning on the pre-training trainer and evaluation (smaug.eval.qa, tools/finetune_qa.py)."""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import QS, REPO, run_ranks, subprocess_env, tool_in_process
from model_helpers import tiny_config

QA_CONFIG = str(REPO / "smaug" / "configs" / "finetune_qa.yaml")


class FakeTokenizer:
    """Whitespace words -> ids (a fixed vocabulary), [CLS] w.. [SEP], padded: enough for the QA code paths."""

    def __init__(self, words):
        self.vocab = {w: i + 4 for i, w in enumerate(sorted(set(" ".join(words).split())))}

    def __call__(self, texts, padding=True, truncation=True, max_length=32, return_tensors="pt", **_):
        seqs = [[1] + [self.vocab[w] for w in t.split()][: max_length - 2] + [2] for t in texts]
        L = max(len(s) for s in seqs)
        ids = torch.tensor([s + [0] * (L - len(s)) for s in seqs])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def tiny_qa_model(vocab: int = 40, blind: bool = False, decoder_layers: int = 0):
    from smaug.models.answer_decoder import QAModel

    torch.manual_seed(0)
    m = QAModel(tiny_config(vocab_size=vocab, mask_ratio=0.0, w_mvm=0.0), decoder_layers, blind)
    m.init_answer_decoder()
    return m.eval()


def fake_clip(video: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(sum(map(ord, video)))
    return torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)


ANSWERS = ["red", "blue circle", "left", "a b c", "up", "b", "red left up"]
WORDS = ANSWERS + ["what", "colour", "is", "it", "which", "way", "a", "b", "c", "circle"]


def test_rank_answers_equals_brute_force_scoring():
    m = tiny_qa_model()
    tok = FakeTokenizer(" ".join(WORDS).split())
    ans = tok(ANSWERS)
    B = 3
    video = torch.stack([fake_clip(str(i)) for i in range(B)])
    q = tok(["what colour is it", "which way", "what is it"])
    with torch.no_grad():
        fused = m.encode_question(video, q["input_ids"], q["attention_mask"])
        # brute force: every answer on its own (no padding), full log-likelihood
        brute = torch.tensor(
            [
                [
                    float(
                        m.answer_log_likelihood(
                            fused[i : i + 1],
                            q["attention_mask"][i : i + 1],
                            *(
                                v[a : a + 1, : int(ans["attention_mask"][a].sum())]
                                for v in (ans["input_ids"], ans["attention_mask"])
                            ),
                        )
                    )
                    for a in range(len(ANSWERS))
                ]
                for i in range(B)
            ]
        )
        # first-token log-probabilities by brute force too
        first = torch.tensor(
            [
                [
                    float(
                        m.answer_log_likelihood(
                            fused[i : i + 1],
                            q["attention_mask"][i : i + 1],
                            ans["input_ids"][a : a + 1, :2],
                            torch.ones(1, 2, dtype=torch.long),
                        )
                    )
                    for a in range(len(ANSWERS))
                ]
                for i in range(B)
            ]
        )
        best, order, ll = m.rank_answers(
            fused, q["attention_mask"], ans["input_ids"], ans["attention_mask"], k=len(ANSWERS), chunk=5
        )
    assert torch.equal(best, brute.argmax(1))
    torch.testing.assert_close(ll, brute.gather(1, order), atol=1e-5, rtol=0)
    for k in (1, 3):
        best_k, order_k, _ = m.rank_answers(fused, q["attention_mask"], ans["input_ids"], ans["attention_mask"], k=k)
        for i in range(B):
            top = sorted(range(len(ANSWERS)), key=lambda a: (-first[i, a].item(), a))[:k]
            assert sorted(order_k[i].tolist()) == sorted(top)
            assert best_k[i].item() == max(top, key=lambda a: brute[i, a].item())


def test_answer_decoder_is_causal_and_question_fusion_bidirectional():
    m = tiny_qa_model()
    video = fake_clip("v")[None]
    q = torch.tensor([[1, 5, 6, 7, 2]])
    qm = torch.ones_like(q)
    a = torch.tensor([[1, 8, 9, 10, 2]])
    with torch.no_grad():
        fused = m.encode_question(video, q, qm)
        fused2 = m.encode_question(video, torch.tensor([[1, 5, 6, 11, 2]]), qm)
        assert not torch.allclose(fused[0, 0], fused2[0, 0])  # the question's first token sees its last ones
        lg = m.answer_decoder(a, torch.ones_like(a), fused, qm)
        lg2 = m.answer_decoder(torch.tensor([[1, 8, 9, 12, 2]]), torch.ones_like(a), fused, qm)
    torch.testing.assert_close(lg[:, :3], lg2[:, :3], atol=0, rtol=0)  # positions before the change: unchanged
    assert not torch.allclose(lg[:, 3], lg2[:, 3])


def test_answer_decoder_starts_as_the_fusion_layers():
    m = tiny_qa_model()
    for d, f in zip(m.answer_decoder.layers, m.text_encoder.fusion):
        for (n, p), (_, q) in zip(d.named_parameters(), f.named_parameters()):
            assert torch.equal(p, q), n
    assert torch.equal(m.answer_decoder.embeddings.word_embeddings.weight, m.text_encoder.word_embeddings)


def test_blind_model_ignores_the_video():
    m = tiny_qa_model(blind=True)
    q = torch.tensor([[1, 5, 6, 2]])
    with torch.no_grad():
        a = m.encode_question(fake_clip("x")[None], q, torch.ones_like(q))
        b = m.encode_question(fake_clip("y")[None], q, torch.ones_like(q))
    assert torch.equal(a, b)


def _write(path: Path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_bad_qa_rows_are_skipped_and_counted(tmp_path):
    from smaug.data.qa_data import read_answer_list, read_qa

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"x")
    rows = [
        {"video": "a.mp4", "question": "what?", "answer": "red", "type": "colour"},
        {"video": "missing.mp4", "question": "what?", "answer": "red"},
        {"video": "a.mp4", "question": "  ", "answer": "red"},
        {"video": "a.mp4", "question": "what?", "answer": ""},
        {"video": "../../etc/passwd", "question": "what?", "answer": "red"},
        {"video": "a.mp4", "question": 3, "answer": "red"},
        "not an object",
        {"question": "what?", "answer": "red"},
    ]
    good, bad = read_qa(_write(tmp_path / "qa.json", rows), str(tmp_path / "v"))
    assert [r["index"] for r in good] == [0] and good[0]["type"] == "colour"
    assert bad == Counter(missing_file=1, empty_question=1, empty_answer=1, unsafe_path=1, malformed_row=3)
    assert read_answer_list(_write(tmp_path / "al.json", ["a", " b ", "a", ""])) == ["a", "b"]


def test_out_of_list_answers_count_wrong_and_are_reported():
    from smaug.eval.qa import evaluate_qa, qa_report

    m = tiny_qa_model()
    tok = FakeTokenizer(" ".join(WORDS).split() + ["purple"])
    rows = [
        {"index": i, "video": f"v{i}", "question": "what colour is it", "answer": a}
        for i, a in enumerate(["red", "purple", "blue circle", "b", "purple"])
    ]
    res = evaluate_qa(m, rows, fake_clip, tok, ANSWERS, torch.device("cpu"), k=3, batch_size=2, max_answer_len=6)
    preds = res["predictions"]
    assert [p["index"] for p in preds] == list(range(5))
    assert all(p["pred"] in ANSWERS for p in preds)
    assert [p["in_list"] for p in preds] == [True, False, True, True, False]
    assert not preds[1]["correct"] and not preds[4]["correct"]
    rep = qa_report(res, ANSWERS, split="t", k=3)
    assert rep["protocol"]["out_of_list"] == 2 and rep["protocol"]["answer_list_size"] == len(ANSWERS)
    assert rep["results"]["in_list_ceiling"] == pytest.approx(60.0)
    assert rep["results"]["accuracy"] == pytest.approx(100.0 * sum(p["correct"] for p in preds) / 5)
    assert any("not in the answer list" in w for w in rep["warnings"])


def test_undecodable_test_clips_are_skipped_and_counted():
    from smaug.data.qa_data import BadClip
    from smaug.eval.qa import evaluate_qa

    def clips(video):
        if video == "bad":
            raise BadClip("decode_error")
        return fake_clip(video)

    tok = FakeTokenizer(" ".join(WORDS).split())
    rows = [
        {"index": i, "video": v, "question": "which way", "answer": "left"} for i, v in enumerate(["a", "bad", "c"])
    ]
    res = evaluate_qa(tiny_qa_model(), rows, clips, tok, ANSWERS, torch.device("cpu"), k=2, batch_size=2)
    assert [p["index"] for p in res["predictions"]] == [0, 2] and res["skipped"] == {"decode_error": 1}


def test_shard_indices_cover_every_item_once():
    from smaug.data.qa_data import shard_indices

    for n in (0, 1, 5, 17):
        for world in (1, 2, 3, 8):
            parts = [shard_indices(n, r, world) for r in range(world)]
            assert sorted(i for p in parts for i in p) == list(range(n))


def test_gather_by_index_rejects_missing_and_repeated_items():
    from smaug.eval.qa import gather_by_index

    assert [r["index"] for r in gather_by_index([{"index": 2}, {"index": 0}, {"index": 1}], [0, 1, 2])] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="missing"):
        gather_by_index([{"index": 0}], [0, 1])
    with pytest.raises(RuntimeError, match="repeated"):
        gather_by_index([{"index": 0}, {"index": 0}], [0])


def test_train_loader_resumes_exactly_and_ranks_are_disjoint():
    from smaug.data.qa_data import QATrainLoader

    tok = FakeTokenizer(" ".join(WORDS).split())
    rows = [{"index": i, "video": f"v{i}", "question": "which way", "answer": ANSWERS[i % 7]} for i in range(23)]

    def take(loader, n):
        it = iter(loader)
        return [next(it) for _ in range(n)]

    ref = take(QATrainLoader(rows, fake_clip, tok, 3, seed=5), 12)  # 7 batches per epoch: crosses an epoch
    first = QATrainLoader(rows, fake_clip, tok, 3, seed=5)
    take(first, 5)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = take(QATrainLoader(rows, fake_clip, tok, 3, seed=5, state=state), 7)
    for a, b in zip(ref[5:], resumed):
        assert (
            a["key"] == b["key"]
            and torch.equal(a["video"], b["video"])
            and torch.equal(a["answer_ids"], b["answer_ids"])
        )
    # two ranks: each global batch split in two disjoint halves, an epoch covers distinct rows
    r0 = take(QATrainLoader(rows, fake_clip, tok, 3, rank=0, world_size=2, seed=5), 3)
    r1 = take(QATrainLoader(rows, fake_clip, tok, 3, rank=1, world_size=2, seed=5), 3)
    keys = [k for b in r0 + r1 for k in b["key"]]
    assert len(keys) == len(set(keys)) == 18


def test_qa_config_is_validated(tmp_path):
    from smaug.config import ConfigError, load_config
    from smaug.eval.qa import QARunConfig

    base = ["model.tokenizer=x", "qa.train_json=t.json", "qa.video_root=v"]
    cfg = load_config([QS, QA_CONFIG], base + ["qa.k=16"], str(tmp_path), QARunConfig)
    assert cfg.qa.k == 16 and cfg.to_dict()["qa"]["train_json"] == "t.json" and cfg.run.name == "finetune-qa"
    for bad, msg in (
        (["qa.kk=3"], "qa.kk: unknown key"),
        (["qa.k=0"], "qa.k >= 1"),
        (["qa.k=many"], "qa.k"),
        (["qa.test_json=x.json"], "qa.answer_list"),
        (["eval.every=5", "data.eval_shards=x"], "eval.every"),
    ):
        with pytest.raises(ConfigError, match=msg):
            load_config([QS, QA_CONFIG], base + bad, str(tmp_path), QARunConfig)
    with pytest.raises(ConfigError, match="qa.train_json"):
        load_config([QS, QA_CONFIG], ["model.tokenizer=x"], str(tmp_path), QARunConfig)
    with pytest.raises(ConfigError, match="qa: unknown section"):  # the plain trainer still refuses it
        load_config([QS], ["model.tokenizer=x", "data.train_shards=x", "qa.k=3"], str(tmp_path))


def test_synthetic_qa_and_mc_sets(synthetic_corpus):
    labels = json.loads((synthetic_corpus / "labels.json").read_text())
    split = {c["relpath"]: c["split"] for c in labels["clips"]}
    train = json.loads((synthetic_corpus / "qa_train.json").read_text())
    test = json.loads((synthetic_corpus / "qa_test.json").read_text())
    answers = json.loads((synthetic_corpus / "answer_list.json").read_text())
    mc = json.loads((synthetic_corpus / "mc_test.json").read_text())
    assert {split[r["video"]] for r in train} == {"train"} and {split[r["video"]] for r in test} == {"eval"}
    assert {r["type"] for r in test} == {"colour", "shape", "motion"}
    assert set(answers) == {r["answer"] for r in train} and {r["answer"] for r in test} <= set(answers)
    for r in mc:
        assert len(r["caption"]) == 5 and r["differs"][r["answer"]] == "" and r["differs"].count("") == 1
        assert len(set(r["caption"])) == 5
    assert sum(r["type"] == "motion" for r in mc) == sum(split[c] == "eval" for c in split)
    assert all(r["differs"].count("motion") == 3 for r in mc if r["type"] == "motion")


# ---------------------------------------------------------------------------- fine-tuning (real trainer)


def qa_cmd(shards: dict, init, out, *extra):
    c = Path(shards["corpus"])
    return [
        sys.executable,
        "-m",
        "smaug.train.qa",
        "--config",
        QS,
        "--config",
        QA_CONFIG,
        "--out",
        str(out),
        f"model.init_from={init}",
        f"model.tokenizer={shards['tokenizer']}",
        f"qa.train_json={c / 'qa_train.json'}",
        f"qa.test_json={c / 'qa_test.json'}",
        f"qa.answer_list={c / 'answer_list.json'}",
        f"qa.video_root={c / 'videos'}",
        "data.batch_size=4",
        "data.num_workers=1",
        "log.progress=false",
        "log.every=1",
        "optim.lr=1e-3",
        "optim.warmup_steps=1",
        *extra,
    ]


def qa_in_process(capfd, cmd: list[str]) -> str:
    """The run of `qa_cmd` as `smaug.train.qa.main(argv)` in this process (as test_train's in-process runs):
    asserts exit 0, returns what it printed."""
    from smaug.train.qa import main

    rc = main([*cmd[cmd.index("smaug.train.qa") + 1 :], "train.device=cpu"])
    text = "".join(capfd.readouterr())
    assert rc == 0, f"exit {rc}\n{text[-6000:]}"
    assert_one_prefix(text)
    return text


def assert_one_prefix(text: str) -> None:
    """The trainer's log formatter prefixes each message with `[smaug] `; a message must not carry it again."""
    doubled = [line for line in text.splitlines() if "[smaug] [smaug]" in line]
    assert not doubled, doubled[:5]


@pytest.mark.slow
def test_qa_kill_and_resume_equals_uninterrupted(pretrained_run, synthetic_shards, tmp_path, capfd):
    """The reference and the resumed run in this process; the killed one a subprocess (SIGKILL is the point)."""
    from test_train import _kill_after_checkpoint, module_state

    extra = ("train.steps=6", "ckpt.every=3")
    ref = tmp_path / "ref"
    qa_in_process(capfd, qa_cmd(synthetic_shards, pretrained_run, ref, *extra))
    out = tmp_path / "killed"
    _kill_after_checkpoint(qa_cmd(synthetic_shards, pretrained_run, out, *extra), out / "checkpoints" / "step_00000003")
    assert "resumed from" in qa_in_process(capfd, qa_cmd(synthetic_shards, pretrained_run, out, *extra))
    a, b = module_state(ref, 6), module_state(out, 6)
    assert a.keys() == b.keys() and any(k.startswith("answer_decoder.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ea, eb = (json.loads((d / "qa_eval.json").read_text()) for d in (ref, out))
    assert ea["predictions"] == eb["predictions"] and ea["protocol"]["step"] == 6
    log = [json.loads(x) for x in (ref / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log if "qa" in x] == list(range(1, 7))  # the QA loss, logged every step


@pytest.mark.slow
def test_finetune_qa_tool_reports_model_majority_and_blind(pretrained_run, synthetic_shards, tmp_path, forked_steps):
    """QA fine-tuning as a downstream user runs it: from the Hugging Face export of the pre-trained run."""
    from smaug.hf.export import export_hf

    hf = tmp_path / "hf"
    export_hf(str(pretrained_run), hf, verify=False)
    c = Path(synthetic_shards["corpus"])
    out = tmp_path / "qa"
    args = [
        "--init",
        str(hf),
        "--out",
        str(out),
        "--train-json",
        str(c / "qa_train.json"),
        "--test-json",
        str(c / "qa_test.json"),
        "--answer-list",
        str(c / "answer_list.json"),
        "--video-root",
        str(c / "videos"),
        "--k",
        "5",
        "train.steps=3",
        "optim.warmup_steps=1",
        "log.progress=false",
        "data.batch_size=4",
        "data.num_workers=1",
    ]
    r = tool_in_process("finetune_qa.py", *args)  # the tool in this process; its steps in their own (forked_steps)
    rep = json.loads((out / "qa_report.json").read_text())
    pr = rep["protocol"]
    test = json.loads((c / "qa_test.json").read_text())
    assert pr["num_questions"] == len(test) and pr["k"] == 5 and pr["answer_list_size"] > 5
    assert pr["out_of_list"] == 0 and pr["step"] == 3 and pr["frames"] == 4 and pr["split"] == "qa_test"
    assert rep["blind"]["protocol"]["blind"] and not pr["blind"]
    assert {"accuracy", "majority_accuracy", "blind_accuracy"} <= rep.keys()
    assert set(rep["per_type"]) == {"colour", "shape", "motion"}
    assert "majority" in r.stdout and "blind" in r.stdout
    assert f"[smaug] initialised from {hf} (missing 0 besides the answer decoder" in r.stdout + r.stderr  # all weights
    assert_one_prefix(r.stdout + r.stderr)


def test_clips_from_shards_equal_clips_from_the_folder(synthetic_shards):
    from smaug.data import DataConfig, load_tokenizer
    from smaug.data.qa_data import BadClip, FolderClips, ShardClips

    c = Path(synthetic_shards["corpus"])
    dcfg = DataConfig(num_frames=4, image_size=112, num_workers=0, shards_root=synthetic_shards["shards_root"])
    shards = ShardClips(synthetic_shards["eval"], dcfg, load_tokenizer(synthetic_shards["tokenizer"]))
    folder = FolderClips(str(c / "videos"), 4, 112, dcfg.short_side)
    videos = [r["video"] for r in json.loads((c / "eval.json").read_text())]
    assert len(shards.clips) == len(videos)
    for v in videos:
        assert torch.equal(shards(v), folder(v)), v
    for clips in (shards, folder):
        with pytest.raises(BadClip):
            clips("eval/not_there.mp4")


@pytest.mark.slow
def test_two_rank_qa_training_and_eval_answer_every_question_once(pretrained_run, synthetic_shards, tmp_path):
    """QA fine-tuning on 2 ranks (gloo), its in-process 2-rank evaluation, and tools/eval_qa.py on 1 rank
    over the same checkpoint: the same answer for every test question, each answered exactly once."""
    out = tmp_path / "w2"
    cmd = qa_cmd(synthetic_shards, pretrained_run, out, "train.steps=2", "ckpt.every=2", "data.batch_size=2")
    run_ranks(cmd, 2, timeout=900, env=subprocess_env(OMP_NUM_THREADS="1"))
    w2 = json.loads((out / "qa_eval.json").read_text())
    test = json.loads((Path(synthetic_shards["corpus"]) / "qa_test.json").read_text())
    assert w2["protocol"]["world_size"] == 2 and w2["protocol"]["step"] == 2
    assert [p["index"] for p in w2["predictions"]] == list(range(len(test)))
    one = tmp_path / "one.json"
    r = tool_in_process("eval_qa.py", "--checkpoint", out, "--out", one)  # 1 rank: this process
    w1 = json.loads(one.read_text())
    assert w1["protocol"]["world_size"] == 1 and w1["predictions"] == w2["predictions"]
    assert "QA accuracy" in r.stdout
