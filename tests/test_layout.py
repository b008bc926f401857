"""The library / trainer boundary: nothing under `smaug/` but `smaug/train/` imports the trainer or DeepSpeed.

Each library package is imported in a fresh interpreter (an import in this process would be
hidden by modules other tests loaded), and `sys.modules` must then hold no `smaug.train*` and no
`deepspeed*`. That also shows that they import where DeepSpeed is not installed: a module that
fails without it executed an import of it, which loads it where it is installed. Reading a
checkpoint, the run config and the evaluation are library code: a tool that only evaluates or
exports never loads the trainer.
"""

import ast
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env

LIBRARY = [
    "smaug",
    "smaug.models",
    "smaug.data",
    "smaug.data.stream",
    "smaug.data.json_clips",
    "smaug.data.benchmarks.config",
    "smaug.eval",
    "smaug.eval.retrieval",
    "smaug.eval.attributes",
    "smaug.eval.cli",
    "smaug.eval.benchmark_table",
    "smaug.hf",
    "smaug.hf.export",
    "smaug.checkpoint",
    "smaug.config",
    "smaug.dist",
    "smaug.train",
]


CHECK = (
    "import sys\nfor m in sys.argv[1:]:\n    __import__(m)\n"
    "bad = {m for m in sys.modules if m == 'deepspeed' or m.startswith('smaug.train.')}\n"
    "print('FORBIDDEN:', ' '.join(sorted(bad)))\n"
)


def _forbidden_after_import(*modules) -> str:
    r = subprocess.run(
        [sys.executable, "-c", CHECK, *modules],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.rsplit("FORBIDDEN:", 1)[1].strip()


@pytest.mark.slow
def test_library_imports_neither_trainer_nor_deepspeed():
    """One fresh interpreter imports every library module; on a failure each is retried alone to name it."""
    bad = _forbidden_after_import(*LIBRARY)
    if bad:
        culprits = {m: got for m in LIBRARY if (got := _forbidden_after_import(m))}
        pytest.fail(f"library imports load the trainer / DeepSpeed: {culprits}")


def test_no_library_module_names_the_trainer():
    """Static check of the same rule, lazy imports included: only smaug/train/ may import smaug.train."""
    offenders = []
    for path in sorted((REPO / "smaug").rglob("*.py")):
        if path.relative_to(REPO / "smaug").parts[0] == "train":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno} {n}"
                for n in names
                if n == "smaug.train" or n.startswith("smaug.train.")
            ]
    assert not offenders, offenders
