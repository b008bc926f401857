"""Shared pytest fixtures. Tests run on CPU with tiny presets and the real libraries."""
import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- data fixtures (smaug.data): a tiny synthetic corpus and its shards, built once per session
# with the real command-line tools, reused by the loader, shard and trainer tests.
SYNTH_VIDEOS, SYNTH_EVAL_FRACTION, SYNTH_IMAGES = 48, 0.25, 12


def run_tool(tool: str, *args, cwd=None, check: bool = True, timeout: float = 300):
    """Run `tools/<tool>` (or another repo script path) with this interpreter; return the result."""
    import subprocess
    import sys

    script = REPO / tool if "/" in tool else REPO / "tools" / tool
    r = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True,
                       text=True, errors="replace", timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if check and r.returncode != 0:
        raise AssertionError(f"{tool} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """Directory written by tools/make_synthetic.py (WebVid layout + eval.json + images.tsv)."""
    out = tmp_path_factory.mktemp("synthetic") / "corpus"
    run_tool("make_synthetic.py", "--out", out, "--num-videos", SYNTH_VIDEOS, "--eval-fraction",
             SYNTH_EVAL_FRACTION, "--num-images", SYNTH_IMAGES, "--seed", 0, "--workers", 2)
    return out


@pytest.fixture(scope="session")
def synthetic_shards(synthetic_corpus, tmp_path_factory) -> dict:
    """Shards of the synthetic corpus: {"shards_root", "train", "eval", "images", "tokenizer",
    "corpus"} (str paths). The root also holds corpus YAMLs `synthetic`, `synthetic_test`,
    `synthetic_images`, so `corpus:NAME` specs resolve with `shards_root`."""
    root = tmp_path_factory.mktemp("shards")
    c = synthetic_corpus
    run_tool("make_shards.py", "--webvid-csv", c / "results_2M_train.csv", "--video-root", c / "videos",
             "--out", root / "train", "--prefix", "synthetic", "--samples-per-shard", 8, "--workers", 2,
             "--no-progress")
    run_tool("make_shards.py", "--json", c / "eval.json", "--video-root", c / "videos", "--out", root / "eval",
             "--prefix", "synthetic_test", "--samples-per-shard", 5, "--no-progress")
    run_tool("make_shards.py", "--image-list", c / "images.tsv", "--image-root", c, "--out", root / "images",
             "--prefix", "synthetic_images", "--samples-per-shard", 8, "--no-progress")
    run_tool("build_tokenizer.py", "--shards", root / "train", "--captions", c / "eval.json",
             "--captions", c / "images.tsv", "--out", root / "tokenizer", "--vocab-size", 500)
    for name, sub, kind in (("synthetic", "train", "video"), ("synthetic_test", "eval", "video"),
                            ("synthetic_images", "images", "image")):
        (root / f"{name}.yaml").write_text(
            f"name: {name}\nmanifest: {sub}/manifest.json\nkind: {kind}\nweight: 1.0\n", encoding="utf-8")
    return {"shards_root": str(root), "train": str(root / "train"), "eval": str(root / "eval"),
            "images": str(root / "images"), "tokenizer": str(root / "tokenizer"), "corpus": str(c)}


# --- retrieval / export fixtures (tools/eval_retrieval.py, export_hf.py, finetune_retrieval.py)
@pytest.fixture(scope="session")
def pretrained_run(synthetic_shards, tmp_path_factory) -> Path:
    """A short tiny pre-training run (the real trainer, one process) on the synthetic shards, with
    its periodic and final zero-shot eval on the held-out split: run dir with checkpoints/ and eval.json.
    LR 1e-4: at the quickstart's 1e-3 the tiny model's VTC features collapse in a few steps."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("pretrained") / "run"
    d = synthetic_shards
    cmd = [sys.executable, "-m", "smaug.train", "--config", str(REPO / "smaug" / "configs" / "quickstart.yaml"),
           "--out", str(out), f"data.shards_root={d['shards_root']}", f"data.train_shards={d['train']}",
           f"data.eval_shards={d['eval']}", f"model.tokenizer={d['tokenizer']}", "data.batch_size=8",
           "data.num_workers=1", "data.round_batches=4", "data.shuffle_buffer=20", "log.progress=false",
           "train.steps=8", "train.unmasked_tail_steps=2", "eval.every=4", "ckpt.every=4", "optim.lr=1e-4", "optim.min_lr=1e-5",
           "optim.warmup_steps=2"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    if r.returncode != 0:
        raise AssertionError(f"pre-training exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return out
