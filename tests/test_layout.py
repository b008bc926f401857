"""The library / trainer boundary: nothing under `smaug/` but `smaug/train/` imports the trainer or DeepSpeed.

Each library package is imported in a fresh interpreter (an import in this process would be
hidden by modules other tests loaded), and `sys.modules` must then hold no `smaug.train*` and no
`deepspeed*`. That also shows that they import where DeepSpeed is not installed: a module that
fails without it executed an import of it, which loads it where it is installed. Reading a
checkpoint, the run config and the evaluation are library code: a tool that only evaluates or
exports never loads the trainer.

And no import cycle, read from the source: neither between two modules (lazy imports inside functions count)
nor between the package's parts (smaug.data, smaug.models, smaug.hf, smaug.checkpoint, ...), tools and bench.
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


# ---------------------------------------------------------------------------- import graph
# Every import between the package's modules, read from the source: module-level and inside functions (a
# lazy import still runs, and a cycle through one is still a cycle), `import x.y` and `from x import y`,
# absolute and relative. The scripts under tools/ and bench/ are nodes too (a sibling imported by its bare
# name, as a script's folder is on sys.path, and tools as the installed `smaug_tools`).
SCRIPT_DIRS = ("tools", "bench")
IMPORT_FALLBACK = ("ImportError", "ModuleNotFoundError")


def source_modules() -> dict:
    """Dotted name -> file of every module of the package and of the scripts."""
    mods = {}
    for path in sorted((REPO / "smaug").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for d in SCRIPT_DIRS:
        mods.update({f"{d}.{p.stem}": p for p in sorted((REPO / d).glob("*.py")) if p.stem != "__init__"})
    return mods


def _fallback_nodes(tree: ast.AST) -> set:
    """The nodes inside the body of a `try:` whose handler catches a failed import."""
    nodes = set()
    for t in ast.walk(tree):
        if isinstance(t, ast.Try) and any(
            h.type is not None and any(isinstance(n, ast.Name) and n.id in IMPORT_FALLBACK for n in ast.walk(h.type))
            for h in t.handlers
        ):
            nodes.update(id(n) for stmt in t.body for n in ast.walk(stmt))
    return nodes


def import_graph(mods: dict) -> tuple[dict, list]:
    """-> ({module: {imported module: "file:line" of the first such import}}, [imports naming no module of the tree]).

    An import resolves to the file it loads: `from a import b` is the module a.b where that file exists, else a.
    A relative import that names no file is allowed only in the body of a `try:` that falls back on ImportError:
    an exported HF folder's `from .smaug import` (a file beside it there, none in the package), whose `except`
    imports the package's own module, which is the edge."""
    graph, unresolved = {m: {} for m in mods}, []
    for mod, path in mods.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        root = mod.split(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        fallback = _fallback_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                wanted = [[a.name] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                wanted = [[f"{base}.{a.name}", base] for a in node.names]
            else:
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            for names in wanted:
                names = [f"tools.{n[len('smaug_tools.') :]}" if n.startswith("smaug_tools.") else n for n in names]
                if root in SCRIPT_DIRS:
                    names = [f"{root}.{n}" if f"{root}.{n}" in mods else n for n in names]
                relative = isinstance(node, ast.ImportFrom) and node.level > 0
                if not relative and names[-1].split(".")[0] not in ("smaug", *SCRIPT_DIRS):
                    continue  # a third-party or standard-library module
                hit = next((n for n in names if n in mods), None)
                if hit is None:
                    if id(node) not in fallback:
                        unresolved.append(f"{where} {names[-1]}")
                elif hit != mod:
                    graph[mod].setdefault(hit, where)
    return graph, unresolved


def find_cycle(graph: dict) -> list:
    """One cycle of `graph` as [a, b, ..., a], or [] (an iterative depth-first search)."""
    state = {}  # node -> 1 while on the current path, 2 once every path from it is done
    for start in sorted(graph):
        if start in state:
            continue
        path, todo = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(graph[nxt])))
    return []


def cycle_text(cycle: list, graph: dict) -> str:
    return "".join(f"{a} ({graph[a][b]}) -> " for a, b in zip(cycle, cycle[1:])) + cycle[-1]


def part_of(mod: str) -> str:
    """A module's part: a direct child of smaug/ (smaug.data, smaug.checkpoint, ...), smaug itself, tools, bench."""
    names = mod.split(".")
    return ".".join(names[:2]) if names[0] == "smaug" else names[0]


def test_no_import_cycle_between_modules():
    graph, unresolved = import_graph(source_modules())
    assert not unresolved, f"imports that name no module of the tree: {unresolved}"
    cycle = find_cycle(graph)
    assert not cycle, f"import cycle between modules: {cycle_text(cycle, graph)}"


def test_no_import_cycle_between_parts():
    """The parts as nodes (smaug.data, smaug.models, smaug.eval, smaug.hf, smaug.train, smaug.checkpoint,
    smaug.config, smaug.dist, ..., tools, bench): an edge where any module of one imports a module of another."""
    parts: dict = {}
    for a, targets in import_graph(source_modules())[0].items():
        parts.setdefault(part_of(a), {})
        for b, where in targets.items():
            if part_of(a) != part_of(b):
                parts[part_of(a)].setdefault(part_of(b), f"{where} imports {b}")
    cycle = find_cycle(parts)
    assert not cycle, f"import cycle between parts: {cycle_text(cycle, parts)}"
