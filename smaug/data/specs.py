"""Shard specs, shard manifests and corpus YAML files.

A *spec* names a set of WebDataset shards. Accepted forms:

- a brace pattern, `/data/webvid-{000000..000999}.tar` (several joined with `::`);
- a directory: its `manifest.json` when present, else its `*.tar` files in sorted order;
- a `manifest.json` written by `tools/make_shards.py` (shard list, per-shard sample counts);
- `corpus:NAME`: the YAML file `NAME.yaml` in the shard root (`$SMAUG_SHARDS` or `shards/`),
  which names a manifest and/or pattern relative to the root, a sample count, a kind and a
  default mixing weight.

Relative specs are tried against the working directory first, then the shard root.
Mixtures are lists of `{"spec": ..., "weight": ...}`; weights are normalised to sum to 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import braceexpand
import yaml

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "smaug-shards/1"
KINDS = ("video", "image", "frames")


@dataclass
class ShardSet:
    """The resolved shards of one corpus."""

    name: str
    urls: list[str]
    # samples per shard, aligned with `urls` (None where unknown, e.g. a bare pattern)
    sizes: list[Optional[int]] = field(default_factory=list)
    kind: Optional[str] = None
    weight: float = 1.0
    # url -> keys the loader drops unread: samples `tools/index_shards.py` found bad in foreign shards
    skip: dict = field(default_factory=dict)

    @property
    def num_samples(self) -> Optional[int]:
        """Total sample count, or None when some shard's count is unknown."""
        if not self.sizes or any(s is None for s in self.sizes):
            return None
        return int(sum(self.sizes))  # type: ignore[arg-type]


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Load a manifest and check its format tag."""
    with open(path, encoding="utf-8") as f:
        man = json.load(f)
    if man.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: not a smaug shard manifest (format={man.get('format')!r})")
    return man


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write deterministic JSON (sorted keys, trailing newline) via a temp file and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _from_manifest(path: Path, name: str) -> ShardSet:
    man = read_manifest(path)
    base = path.parent
    shards = [s for s in man["shards"]]
    return ShardSet(
        name=name,
        urls=[str(base / s["name"]) for s in shards],
        sizes=[int(s["samples"]) for s in shards],
        kind=man.get("kind"),
        skip={str(base / k): frozenset(v) for k, v in (man.get("skip_keys") or {}).items()},
    )


def _from_directory(path: Path, name: str) -> ShardSet:
    if (path / MANIFEST_NAME).is_file():
        return _from_manifest(path / MANIFEST_NAME, name)
    tars = sorted(p for p in path.glob("*.tar") if p.is_file())
    if not tars:
        raise FileNotFoundError(f"shard directory {path} has neither {MANIFEST_NAME} nor *.tar files")
    return ShardSet(name=name, urls=[str(p) for p in tars], sizes=[None] * len(tars))


def _is_local(url: str) -> bool:
    return not (":" in url.split("/")[0] and not os.path.isabs(url))


def _from_pattern(pattern: str, root: Path, name: str) -> ShardSet:
    urls: list[str] = []
    for part in pattern.split("::"):
        expanded = list(braceexpand.braceexpand(part))
        if expanded and _is_local(expanded[0]) and not os.path.isabs(expanded[0]):
            if not Path(expanded[0]).exists() and (root / expanded[0]).exists():
                expanded = [str(root / u) for u in expanded]
        urls.extend(expanded)
    local_missing = [u for u in urls if _is_local(u) and not Path(u).is_file()]
    if local_missing:
        raise FileNotFoundError(
            f"spec {pattern!r}: {len(local_missing)} of {len(urls)} shards missing, e.g. {local_missing[0]}"
        )
    return ShardSet(name=name, urls=urls, sizes=[None] * len(urls))


def _from_corpus(cname: str, root: Path) -> ShardSet:
    yml = root / f"{cname}.yaml"
    if not yml.is_file():
        raise FileNotFoundError(f"corpus:{cname}: no {yml} (shard root: $SMAUG_SHARDS or shards/)")
    with open(yml, encoding="utf-8") as f:
        info = yaml.safe_load(f) or {}
    man = info.get("manifest")
    if man and (root / man).is_file():
        ss = _from_manifest(root / man, cname)
    elif info.get("pattern"):
        try:
            ss = _from_pattern(str(info["pattern"]), root, cname)
        except FileNotFoundError as exn:
            raise FileNotFoundError(
                f"corpus:{cname} ({yml}): manifest {man!r} absent and {exn}; build it with tools/make_shards.py"
            ) from exn
        n = info.get("num_samples")
        if n and ss.urls:  # spread the nominal count for length estimates only
            ss.sizes = [int(n) // len(ss.urls)] * len(ss.urls)
    else:
        raise FileNotFoundError(f"corpus:{cname} ({yml}): manifest {man!r} not found and no pattern")
    ss.kind = ss.kind or info.get("kind")
    ss.weight = float(info.get("weight", 1.0))
    return ss


def resolve_spec(spec: str, root: str | os.PathLike) -> ShardSet:
    """Resolve one spec string into a `ShardSet` (see the module docstring for forms)."""
    root = Path(root)
    spec = str(spec)
    if spec.startswith("corpus:"):
        return _from_corpus(spec[len("corpus:") :], root)
    name = Path(spec.split("::")[0]).stem or spec
    for cand in (Path(spec), root / spec):
        if cand.is_dir():
            return _from_directory(cand, cand.name)
        if cand.is_file() and cand.suffix == ".json":
            return _from_manifest(cand, cand.parent.name)
    return _from_pattern(spec, root, name)


def resolve_mixture(specs: Any, root: str | os.PathLike) -> list[ShardSet]:
    """Resolve a spec string, or a list of specs / `{spec, weight}` dicts, into weighted sets."""
    if specs is None:
        raise ValueError("no shard spec given")
    items: Sequence[Any] = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    sets = []
    for item in items:
        if isinstance(item, dict):
            unknown = set(item) - {"spec", "weight"}
            if unknown or "spec" not in item:
                raise ValueError(f"mixture entry {item!r}: expected keys 'spec' and optional 'weight'")
            ss = resolve_spec(item["spec"], root)
            if "weight" in item:
                ss.weight = float(item["weight"])
        else:
            ss = resolve_spec(str(item), root)
        if ss.weight <= 0:
            raise ValueError(f"corpus {ss.name}: weight must be > 0, got {ss.weight}")
        sets.append(ss)
    total = sum(s.weight for s in sets)
    for s in sets:
        s.weight /= total
    return sets
