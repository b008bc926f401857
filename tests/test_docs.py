"""Docs that cannot rot: every command in the code blocks of README.md, docs/*.md and shards/README.md is checked
against the code it names, in this process (no training, no interpreter start-ups):

- `python tools/X.py ...`, the `smaug-*` entry points and `python bench/X.py ...` parse with the tool's own parser
  (`arg_parser()`, or the tool's `parse_args`, whose checks of option combinations then run too); a command
  elided with `...` has each of its `--flags` looked up in that parser instead;
- `python -m smaug.train --config X ... key=value` and the launchers (`CONFIG=... bash launch/pretrain_8gpu.sh
  key=value`, `sbatch ... launch/pretrain_slurm.sh`, `bash launch/quickstart.sh key=value`) load their run
  config with `smaug.config.load_config` (keys, types and combinations; the pretrained towers and paths are not
  fetched: the test machine is offline), and every `key=value` anywhere is a key of the run-config schema
  with a value of its type (model knobs through `model_section`);
- every repository path named in a code block or an inline code span, and every relative link, exists.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import sys
from pathlib import Path

import pytest
import tomllib

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "shards" / "README.md"]
SHELL_LANGS = ("bash", "sh", "shell", "console", "")
OVERRIDE = re.compile(r"^[a-z_]+(\.[a-z_0-9]+)+=")
ENV_ASSIGN = re.compile(r"^[A-Z_][A-Z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECT = re.compile(r"(?<=\s)\d?(?:>>?|<)(?:&\d+|\s*[^\s;&|]+)")  # `> run.log`, `2>&1`: not arguments
REPO_DIRS = ("tools", "bench", "launch", "smaug", "docs", "tests", "ds_configs", "shards", ".ci")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, REPO_DIRS)) + r")/[\w./-]*)")
PLACEHOLDERS = {"NAME", "PREFIX", "X", "N", "TOOL"}  # shards/NAME.yaml: a name the reader picks
COMMAND_START = re.compile(r"^([A-Z_][A-Z0-9_]*=\S+ )*(python3? |bash |sbatch |torchrun |smaug-)")
PLACEHOLDER_VALUE = re.compile(r"^[a-z_]+(\.[a-z_0-9]+)+=[A-Z][A-Z_0-9]*$")
PLACEHOLDER_OVERRIDE = re.compile(r"^(section\.key=|\S+=[A-Z_]+$)|.* ")  # `section.key=value`, `x=MODE`, prose
LINK = re.compile(r"\]\(([^)\s]+)\)")
ENTRY_POINTS = {
    name: target.split(":")[0].split(".")[-1]
    for name, target in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"].items()
}  # smaug-make-shards -> make_shards; smaug-train -> __main__


# ---------------------------------------------------------------------------- reading the pages
def code_blocks(text: str):
    """(language, first line number, body) of each fenced block."""
    for m in re.finditer(r"(?ms)^```([\w-]*)[^\n]*\n(.*?)^```", text):
        yield m.group(1), text.count("\n", 0, m.start()) + 2, m.group(2)


def shell_commands(body: str, first_line: int):
    """(line, tokens) of each simple command of a shell block: continuations joined, comments dropped,
    `&&` / `;` / `|` split, redirections dropped."""
    lines, start, cur = [], first_line, ""
    for i, line in enumerate(body.splitlines()):
        if not cur:
            start = first_line + i
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        lines.append((start, cur + line))
        cur = ""
    for lineno, line in lines:
        line = REDIRECT.sub(" ", line)
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split, lex.commenters = True, "#"
        try:
            tokens = list(lex)
        except ValueError as e:
            yield lineno, ["<unparsable>", str(e)]
            continue
        cmd = []
        for t in tokens:
            if t in SEPARATORS:
                if cmd:
                    yield lineno, cmd
                cmd = []
            else:
                cmd.append(t)
        if cmd:
            yield lineno, cmd


# ---------------------------------------------------------------------------- what each command names
def _module_parser(module):
    """The module's argument parser and whether to call its `parse_args` (which also checks combinations)."""
    if hasattr(module, "arg_parser"):
        return module.arg_parser, None
    return None, module.parse_args


def tool_module(name: str, where: str):
    if where == "tools":
        return importlib.import_module(f"smaug_tools.{name}")
    sys.path.insert(0, str(REPO / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "bench"))


def parse_with(module, args: list[str], partial: bool) -> str | None:
    """None if `args` parse with the module's parser; else argparse's message. `partial`: only look the flags up."""
    build, parse = _module_parser(module)
    if partial:
        if build is None:  # the parser is inside parse_args: catch it as it parses nothing
            parser = _capture_parser(parse)
        else:
            parser = build()
        known = parser._option_string_actions
        unknown = [a.split("=")[0] for a in args if a.startswith("-") and a.split("=")[0] not in known]
        return f"unknown option(s) {', '.join(unknown)}" if unknown else None
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            (build().parse_args if build else parse)(args)
    except SystemExit as e:
        if e.code:
            lines = err.getvalue().strip().splitlines()
            return re.sub(r"^\S+: error: ", "", lines[-1]) if lines else f"exit {e.code}"
    return None


class _Parsed(Exception):
    pass


def _capture_parser(parse_args):
    import argparse

    seen = {}
    real = argparse.ArgumentParser.parse_args

    def grab(self, *a, **k):
        seen["p"] = self
        raise _Parsed

    real_intermixed = argparse.ArgumentParser.parse_intermixed_args
    argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_intermixed_args = grab
    try:
        parse_args([])
    except _Parsed:
        pass
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_intermixed_args = real, real_intermixed
    return seen["p"]


def check_override(item: str) -> str | None:
    """`section.key=value`: a key of the run-config schema with a value of its type."""
    from smaug.config import SECTIONS, ConfigError, flat_model_knobs, model_section, parse_override
    from smaug.data import DataConfig
    from smaug.eval.qa import QASection
    from smaug.schema import build_section

    sections = {**SECTIONS, "data": DataConfig, "qa": QASection}
    try:
        tree = flat_model_knobs(parse_override(item), item)
        ((name, values),) = tree.items()
        if name not in sections:
            return f"{item}: unknown section {name!r} (known: {', '.join(sections)})"
        if name == "model":
            model_section(values)
        else:
            build_section(name, sections[name], values)
    except ConfigError as e:
        return str(e)
    return None


def check_run_config(configs: list[str], overrides: list[str]) -> str | None:
    """The run config a training command would load: files, overrides, combinations. The towers are not fetched
    and no path is checked (the docs' corpora and checkpoints are the reader's)."""
    from smaug.config import ConfigError, load_config

    offline = [o for o in overrides if not o.startswith(("model.vision_init=", "model.text_init="))]
    neutral = ["model.vision_init=null", "model.text_init=null", "model.allow_random_init=true"]
    try:
        load_config(configs, [*offline, *neutral, "model.tokenizer=tok", "train.device=auto"], output_dir="/tmp/x")
    except ConfigError as e:
        return str(e)
    return None


def _args_after(tokens: list[str], i: int) -> list[str]:
    return [t.strip("[]") for t in tokens[i + 1 :] if t.strip("[]")]


def check_command(tokens: list[str], fragment: bool = False) -> list[str]:
    """Problems of one shell command (empty when it is right or names nothing this test knows). `fragment`: a
    command quoted in prose, which may leave arguments out: its flags and overrides are checked, not its
    completeness."""
    env = {}
    while tokens and ENV_ASSIGN.match(tokens[0]):
        k, v = tokens.pop(0).split("=", 1)
        env[k] = v
    tokens = [t for t in tokens if not PLACEHOLDER_VALUE.search(t)]  # `run.seed=S`: the reader's value, unchecked
    problems = [p for t in tokens if OVERRIDE.match(t) and (p := check_override(t))]
    for i, t in enumerate(tokens):
        args = _args_after(tokens, i)
        partial = fragment or any("..." in a for a in args)
        args = [a for a in args if "..." not in a]
        m = re.fullmatch(r"(tools|bench)/(\w+)\.py", t)
        if m or t in ENTRY_POINTS and t != "smaug-train":
            where, name = (m.group(1), m.group(2)) if m else ("tools", ENTRY_POINTS[t])
            if not (REPO / where / f"{name}.py").is_file():
                return [*problems, f"{where}/{name}.py: no such tool"]
            err = parse_with(tool_module(name, where), args, partial)
            return [*problems, *([f"{t}: {err}"] if err else [])]
        if t == "smaug-train" or (t in ("-m", "--module") and i + 1 < len(tokens) and tokens[i + 1] == "smaug.train"):
            from smaug.train.trainer import parse_args

            rest = args if t == "smaug-train" else args[1:]
            if partial:
                known = _capture_parser(parse_args)._option_string_actions
                unknown = [a.split("=")[0] for a in rest if a.startswith("-") and a.split("=")[0] not in known]
                return [
                    *problems,
                    *([f"python -m smaug.train: unknown option(s) {', '.join(unknown)}"] if unknown else []),
                ]
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    ns = parse_args(rest)
            except SystemExit:
                return [*problems, f"python -m smaug.train: {err.getvalue().strip().splitlines()[-1]}"]  # argparse's
            err = None if problems else check_run_config(ns.config, ns.overrides)
            return [*problems, *([f"smaug.train: {err}"] if err else [])]
        m = re.fullmatch(r"launch/(\w+)\.sh", t)
        if m:
            if not (REPO / t).is_file():
                return [*problems, f"{t}: no such launcher"]
            if m.group(1).startswith("pretrain_"):
                configs = env.get("CONFIG", "smaug/configs/pretrain_5m.yaml").split()
            elif m.group(1) == "quickstart":
                configs = ["quickstart", *(["dense"] if env.get("QUICKSTART_DENSE") == "1" else [])]
            elif m.group(1) == "make_shards_slurm":
                tool = env.get("TOOL", "make_shards")
                err = parse_with(tool_module(tool, "tools"), args, partial)
                return [*problems, *([f"{t} ({tool}): {err}"] if err else [])]
            else:
                return problems
            bad = [a for a in args if not OVERRIDE.match(a)]
            if bad:
                return [*problems, f"{t}: takes key=value overrides only, got {bad}"]
            err = None if partial or problems else check_run_config(configs, args)
            return [*problems, *([f"{t}: {err}"] if err else [])]
    return problems


def inline_code(text: str) -> list[str]:
    """The inline code spans of a page, outside its fenced blocks."""
    return re.findall(r"`([^`\n]+)`", re.sub(r"(?ms)^```.*?^```", "", text))


def repo_paths(text: str) -> list[str]:
    """Repository paths named in code blocks and inline code spans of a page (folders the reader makes, such as
    shards/NAME, are not paths of the repository: under shards/ only files with a suffix count)."""
    spans = [b for lang, _, b in code_blocks(text) if lang in SHELL_LANGS] + inline_code(text)
    found = []
    for span in spans:
        for p in PATH.findall(span):
            p = p.rstrip(".,:;")
            placeholder = any(part.split(".")[0] in PLACEHOLDERS for part in p.split("/"))
            if placeholder or any(c in p for c in "*{<") or (p.startswith("shards/") and "." not in Path(p).name):
                continue
            found.append(p)
    return found


def check_page(text: str, page: Path) -> list[str]:
    """Every problem of one page, each `page:line: what`."""
    name = page.relative_to(REPO) if page.is_relative_to(REPO) else page
    problems = []
    for lang, line, body in code_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        for lineno, tokens in shell_commands(body, line):
            problems += [f"{name}:{lineno}: {p}" for p in check_command(list(tokens))]
    for span in inline_code(text):  # `python tools/x.py --flag ...` and `key=value` in the prose
        if COMMAND_START.match(span):
            for _, tokens in shell_commands(span, 0):
                problems += [f"{name}: `{span}`: {p}" for p in check_command(list(tokens), fragment=True)]
        elif OVERRIDE.match(span) and not PLACEHOLDER_OVERRIDE.match(span) and (p := check_override(span)):
            problems.append(f"{name}: `{span}`: {p}")
    problems += [f"{name}: {p} does not exist" for p in repo_paths(text) if not (REPO / p).exists()]
    for link in LINK.findall(text):
        target, _, anchor = link.partition("#")
        if re.match(r"\w+:", target):
            continue  # a URL
        path = page.parent / target if target else page
        if not path.exists():
            problems.append(f"{name}: link {target} does not exist")
        elif anchor and path.suffix == ".md":
            heads = path.read_text(encoding="utf-8") if target else text
            if anchor not in anchors(heads):
                problems.append(f"{name}: link {link}: no heading #{anchor} in {target or 'this page'}")
    return problems


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"(?ms)^```.*?^```", "", text)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"(?m)^#+ (.+)$", text)}


# ---------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_page_commands_paths_and_links_hold(page):
    problems = check_page(page.read_text(encoding="utf-8"), page)
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move the detail into docs/"


def test_the_checker_finds_a_broken_flag_a_bad_key_and_a_missing_path():
    """The same checker on a README whose flag was renamed, whose override names no key, and whose path moved."""
    broken = "\n".join(
        [
            "# t",
            "```bash",
            "python tools/eval_retrieval.py --checkpoint runs/x --shards corpus:msrvtt_1k_test --no-such-flag 3",
            "smaug-export-hf --checkpoint runs/x --out hf/x --vision-onyl",
            "python tools/make_shards.py --json a.json --video-root v --out shards/x ... --not-a-flag",
            "CONFIG=smaug/configs/quickstart.yaml bash launch/pretrain_8gpu.sh optim.lrr=1e-4",
            "python -m smaug.train --config quickstart --out runs/q model.mask_ratio=lots",
            "bash launch/quickstart.sh train.unmasked_tail_steps=5000",
            "python bench/train_step.py --device cpu --preset huge",
            "```",
            "Prose: `python tools/build_tokenizer.py --shards x --vocab-sise 10`, `model.mask_ratioo=0.5`.",
            "See `tools/no_such_tool.py`, [the guide](docs/no_such_page.md) and [data](docs/data.md#no-such-part).",
        ]
    )
    problems = "\n".join(check_page(broken, REPO / "README.md"))
    for needle in (
        "--no-such-flag",
        "--vision-onyl",
        "--not-a-flag",
        "optim.lrr",
        "model.mask_ratio",
        "train.unmasked_tail_steps",  # a combination: longer than train.steps
        "huge",
        "tools/no_such_tool.py does not exist",
        "link docs/no_such_page.md does not exist",
        "no heading #no-such-part in docs/data.md",
        "--vocab-sise",
        "model.mask_ratioo",
    ):
        assert needle in problems, (needle, problems)
    assert len(problems.splitlines()) == 12, problems  # one problem each, none for the good parts


def test_a_right_command_passes():
    good = (
        "```bash\n"
        "python tools/eval_retrieval.py --checkpoint runs/x --json test.json --video-root videos \\\n"
        "    --frames 12 --k 128 --out eval.json   # a comment\n"
        "OUT=runs/dense CONFIG='smaug/configs/pretrain_5m.yaml smaug/configs/dense.yaml' "
        "bash launch/pretrain_8gpu.sh train.steps=10000 model.keep_ratio=0.5\n"
        "```\n"
    )
    assert check_page(good, REPO / "README.md") == []


def test_the_seeds_harness_fine_tunes_videoqa_as_downstream_md_says():
    """bench/quickstart_seeds.py --qa repeats docs/downstream.md's VideoQA command's overrides (a script cannot read a
    page): the two lists must stay the same, or the harness's QA numbers stop being the page's."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import quickstart_seeds
    finally:
        sys.path.remove(str(REPO / "bench"))
    text = (REPO / "docs" / "downstream.md").read_text(encoding="utf-8")
    found = [
        [t for t in tokens if OVERRIDE.match(t)]
        for lang, first, body in code_blocks(text)
        if lang in SHELL_LANGS
        for _, tokens in shell_commands(body, first)
        if "tools/finetune_qa.py" in tokens and "runs/quickstart" in tokens  # --init runs/quickstart
    ]
    assert len(found) == 1, "docs/downstream.md: one `python tools/finetune_qa.py --init runs/quickstart ...` command"
    assert sorted(found[0]) == sorted(quickstart_seeds.QA_OVERRIDES)
