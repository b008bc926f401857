"""Packaging: `pip install .` (not editable) gives a smaug that trains without the repository, with
its run configs and DeepSpeed JSON as package data and the tools as console entry points; the package list
in pyproject.toml covers the tree; constraints.txt pins what this suite runs with."""

import re
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from conftest import REPO, run, run_overrides, subprocess_env

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_constraints_pin_the_versions_this_suite_runs_with():
    """constraints.txt is what launch/setup_env.sh installs under: an upgrade that is not written there fails here."""
    pins = dict(
        re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line).groups()
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert {"torch", "deepspeed", "transformers", "timm", "webdataset", "decord2"} <= set(pins)
    wrong = {name: (pin, version(name)) for name, pin in pins.items() if version(name) != pin}
    assert not wrong, f"installed versions differ from constraints.txt (pinned, installed): {wrong}"
    assert "constraints.txt" in (REPO / "README.md").read_text()


def test_package_list_covers_every_package_and_tool():
    """pyproject.toml lists packages by hand (tools/ installs as `smaug_tools`): none may be left out, and every
    [project.scripts] entry point names a `main` (or `cli`) that exists."""
    import importlib

    from setuptools import find_packages

    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    data = {"smaug.configs", "smaug.ds_configs"}  # folders of YAML / JSON, listed so setuptools ships them
    assert set(find_packages(str(REPO), include=["smaug", "smaug.*"])) | data | {"smaug_tools"} == listed
    for d in data:
        files = {p.suffix for p in (REPO / d.replace(".", "/")).iterdir()}
        assert files and ".py" not in files and set(PYPROJECT["tool"]["setuptools"]["package-data"][d]), d
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"smaug_tools": "tools"}
    scripts = PYPROJECT["project"]["scripts"]
    tools = {p.stem for p in (REPO / "tools").glob("*.py") if p.stem != "__init__"}
    assert {f"smaug_tools.{t}:main" for t in tools} | {"smaug.train.__main__:main"} == set(scripts.values())
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def _tree_copy(dst: Path) -> Path:
    """The checkout's files as a fresh clone has them (no venv, data, runs, caches or build output)."""
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    assert tracked.returncode == 0, tracked.stderr
    for rel in tracked.stdout.splitlines():
        src = REPO / rel
        if src.is_symlink() or src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                (dst / rel).symlink_to(src.readlink())
            else:
                shutil.copy2(src, dst / rel)
    return dst


@pytest.mark.slow
def test_wheel_install_trains_from_another_directory(synthetic_shards, tmp_path):
    """`pip install .` (no deps, not editable) into a new venv, and from an unrelated directory train
    the quickstart config (`--config quickstart`, found in the package) for a few steps with `smaug-train`."""
    src = _tree_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    # the new venv takes its dependencies (torch, deepspeed, ...) from this one, read-only, through PYTHONPATH;
    # smaug itself is installed editable there, which takes effect only through that venv's own .pth files
    env = subprocess_env(PYTHONPATH=sysconfig.get_paths()["purelib"])
    # `pip install .` (not editable) of a fresh clone's files, with this venv's setuptools as the build backend
    pip = [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index"]
    run([*pip, "--no-build-isolation", "."], cwd=src, env=env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = "import smaug, smaug_tools, smaug.train.ds_config as d; print(smaug.__file__); print(d.DS_DIR)"
    where = run([py, "-c", probe], cwd=elsewhere, env=env).stdout.split()
    site = str(venv / "lib")
    assert where[0].startswith(site) and where[1].startswith(site), where  # the installed copy, not the checkout
    assert (Path(where[1]) / "zero2_cpu.json").is_file()
    d = synthetic_shards
    r = run(
        [
            venv / "bin" / "smaug-train",
            "--config",
            "quickstart",
            "--out",
            "run",
            *run_overrides(
                d,
                "train.steps=3",
                "train.unmasked_tail_steps=1",
                "optim.warmup_steps=1",
                "train.device=cpu",
                "ckpt.every=3",
            ),
        ],
        cwd=elsewhere,
        env=env,
    )
    assert (elsewhere / "run" / "checkpoints" / "latest").is_file(), r.stdout[-2000:]
    assert "config" in {p.stem for p in (elsewhere / "run").glob("*.yaml")}  # the resolved config, next to the run
    tools = run([venv / "bin" / "smaug-make-shards", "--help"], cwd=elsewhere, env=env)
    assert "--webvid-csv" in tools.stdout
