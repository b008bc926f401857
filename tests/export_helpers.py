"""Helpers for the HF export tests: what the library computes, what an exported folder computes in a fresh
process where smaug cannot be imported, and what a person sees when loading it in a terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from conftest import run, subprocess_env

# An exported folder's retrieval outputs, computed by transformers' remote-code path in a process where
# `import smaug` fails: argv = inputs.safetensors out.safetensors folder... (video{i} is folder i's clip)
FRESH = textwrap.dedent("""
    import sys
    sys.modules["smaug"] = None  # any import of smaug raises ImportError, as where it is not installed
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel
    inputs, out, *folders = sys.argv[1:]
    x = load_file(inputs)
    ids, mask = x["input_ids"], x["attention_mask"]
    res = {}
    for i, folder in enumerate(folders):
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        video = x[f"video{i}"]
        with torch.no_grad():
            o = model(input_ids=ids, attention_mask=mask, pixel_values=video)
            res[f"{i}.video"], res[f"{i}.text"], res[f"{i}.logits"] = o.video_embeds, o.text_embeds, o.logits_per_text
            res[f"{i}.video_features"] = model.get_video_features(video)
            res[f"{i}.text_features"] = model.get_text_features(ids, mask)
            res[f"{i}.vtm"] = model.get_vtm_logits(video, ids, mask)
        print(i, type(model).__module__, type(model).__name__)
    loaded = sorted(m for m in sys.modules if m.startswith("smaug."))
    assert not loaded, f"smaug was imported: {loaded}"
    save_file({k: v.contiguous() for k, v in res.items()}, out)
""")


@torch.no_grad()
def library_outputs(model, video: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    """The library's own answers (SmaugModel, eval mode) to what FRESH asks an export."""
    model.eval()
    frame_tokens, video_feat, frame_feat = model.encode_video(video)
    text_hidden, text_feat = model.encode_text(ids, mask)
    return {
        "video": model.get_video_features(video),
        "text": model.get_text_features(ids, mask),
        "logits": text_feat @ video_feat.t() / model.temp,
        "vtm": model.vtm_logits(frame_tokens, frame_feat, text_hidden, text_feat, mask),
    }


def fresh_outputs(folders: list[Path], videos: list[torch.Tensor], ids, mask, tmp: Path) -> list[dict]:
    """FRESH over `folders` (folder i gets videos[i]) -> one dict of outputs per folder."""
    inputs = {f"video{i}": v for i, v in enumerate(videos)}
    save_file({**inputs, "input_ids": ids, "attention_mask": mask}, str(tmp / "inputs.safetensors"))
    env = subprocess_env(HF_MODULES_CACHE=tmp / "hf_modules")
    env.pop("PYTHONPATH", None)
    r = run(
        [sys.executable, "-c", FRESH, tmp / "inputs.safetensors", tmp / "out.safetensors", *folders],
        cwd=tmp,
        env=env,
    )
    assert r.stdout.count("modeling_smaug SmaugHFModel") == len(folders), r.stdout
    got = load_file(str(tmp / "out.safetensors"))
    return [{k.split(".", 1)[1]: v for k, v in got.items() if k.startswith(f"{i}.")} for i in range(len(folders))]


def assert_same_outputs(got: dict, want: dict, label: str) -> dict:
    """Export == library: embeddings and logits within 1e-5, VTM logits within 1e-4. Returns the max |diff|s."""
    diffs = {k: (got[k] - want[k]).abs().max().item() for k in want}
    diffs["video_features"] = (got["video_features"] - want["video"]).abs().max().item()
    diffs["text_features"] = (got["text_features"] - want["text"]).abs().max().item()
    for k, d in diffs.items():
        assert d <= (1e-4 if k in ("vtm", "logits") else 1e-5), f"{label}: {k} differs by {d:.3g}"
    return diffs


@torch.no_grad()
def perturbed(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Noise on every parameter, so what starts at zero (BEiT's q/v biases and bias tables, layer scale, the
    temporal blocks' output projections, the temporal embedding) takes part in the comparison."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def in_a_terminal(
    cmd: list, env: dict, cwd: Path, timeout: float = 300, stop_at: tuple[str, ...] = ()
) -> tuple[str, int]:
    """Run `cmd` with a pseudo-terminal as its stdin, stdout and stderr, as a person at a shell would: a prompt
    shows and waits there (with standard input closed it would fall through at once). Returns (everything it
    wrote, exit code); returns early, killing it (exit code -9), as soon as any of `stop_at` appears."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(c) for c in cmd], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if any(s.encode() in out for s in stop_at):
                    break
            elif p.poll() is not None:
                break
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert time.monotonic() < deadline, f"{cmd}: still running after {timeout} s:\n{text[-3000:]}"
    return text, p.returncode
