"""tools/make_shards.py: members and manifest, interoperability, SIGKILL resume, bad input,
and a WebVid-format corpus with rows and videos wrong in ways the synthetic corpus never is."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_one_skip_line, run_tool, subprocess_env


def read_tar(path):
    """{key: {ext: bytes}} and the member names in order, with Python's tarfile only."""
    samples, names = {}, []
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            names.append(m.name)
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples, names


def csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def encode(path, codec="libx264", w=160, h=120, fps=10, n=12, faststart=False):
    """A small test video with a moving bar, via PyAV."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            a = np.full((h, w, 3), 30, np.uint8)
            a[:, (i * 7) % w : (i * 7) % w + 16] = (220, 60, 60)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_members_json_and_manifest(synthetic_shards):
    c, out = Path(synthetic_shards["corpus"]), Path(synthetic_shards["train"])
    rows = {r["videoid"]: r for r in csv_rows(c / "results_2M_train.csv")}
    man = json.loads((out / "manifest.json").read_text())
    assert man["num_samples"] == len(rows) == sum(s["samples"] for s in man["shards"])
    assert man["num_shards"] == len(man["shards"]) and man["samples_per_shard"] == 8
    assert man["command"].startswith("tools/make_shards.py --webvid-csv") and man["version"]
    seen = set()
    for sh in man["shards"]:
        assert sh["name"].startswith("synthetic-") and (out / sh["name"]).stat().st_size == sh["bytes"]
        samples, names = read_tar(out / sh["name"])
        assert len(samples) == sh["samples"]
        for key, mem in samples.items():
            assert "." not in key and set(mem) == {"mp4", "txt", "json"}
            meta = json.loads(mem["json"])
            row = rows[meta["id"]]
            assert mem["txt"].decode() == row["name"]
            src = c / "videos" / row["page_dir"] / f"{row['videoid']}.mp4"
            assert meta["source"] == f"{row['page_dir']}/{row['videoid']}.mp4"
            assert mem["mp4"] == src.read_bytes()
            for field in ("duration", "fps", "num_frames", "width", "height"):
                assert meta[field] > 0
            assert abs(meta["duration"] - meta["num_frames"] / meta["fps"]) < 1e-2
            seen.add(meta["id"])
    assert seen == set(rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == len(rows) and not any(summary["skipped"].values())


def test_eval_json_keeps_all_captions(synthetic_shards):
    c, out = Path(synthetic_shards["corpus"]), Path(synthetic_shards["eval"])
    entries = {e["video"]: e["caption"] for e in json.loads((c / "eval.json").read_text())}
    got = {}
    for tar in sorted(out.glob("*.tar")):
        for mem in read_tar(tar)[0].values():
            meta = json.loads(mem["json"])
            assert mem["txt"].decode() == meta["captions"][0]
            got[meta["source"]] = meta["captions"]
    assert got == entries


def test_plain_tar_and_webdataset_read_the_shards(synthetic_shards):
    import webdataset as wds

    out = Path(synthetic_shards["train"])
    tars = sorted(str(p) for p in out.glob("*.tar"))
    listed = []
    for t in tars:
        r = subprocess.run(["tar", "-tf", t], capture_output=True, text=True, check=True)
        listed += r.stdout.split()
    keys_tar = {n.split(".")[0] for n in listed}
    assert all(n.rsplit(".", 1)[1] in ("mp4", "txt", "json") for n in listed)
    ds = wds.WebDataset(tars, shardshuffle=False)
    samples = list(ds)
    assert {s["__key__"] for s in samples} == keys_tar and len(samples) == len(keys_tar)
    assert all(set(s) >= {"mp4", "txt", "json"} for s in samples)
    decoded = next(iter(wds.WebDataset(tars[:1], shardshuffle=False).decode()))
    assert isinstance(decoded["txt"], str) and isinstance(decoded["json"], dict)


def _digest(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_sigkill_then_rerun_is_byte_identical(synthetic_corpus, tmp_path):
    c = Path(synthetic_corpus)
    lines = (c / "results_2M_train.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "rows.csv").write_text("".join(lines[:21]), encoding="utf-8")
    args = [
        "--webvid-csv",
        tmp_path / "rows.csv",
        "--video-root",
        c / "videos",
        "--out",
        "out",
        "--samples-per-shard",
        2,
        "--resize-short-side",
        64,
        "--fps",
        5,
        "--workers",
        2,
        "--no-progress",
    ]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    env = subprocess_env(SMAUG_SHARDS=".")  # out/ is in the shard root of both runs: the same corpus YAML
    run_tool("make_shards.py", *args, cwd=tmp_path / "a", env=env)
    ref = _digest(tmp_path / "a" / "out")
    n_shards = len([k for k in ref if k.endswith(".tar")])
    assert n_shards == 10

    cmd = [sys.executable, str(REPO / "tools" / "make_shards.py"), *map(str, args)]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path / "b", env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    stats = tmp_path / "b" / "out" / "stats"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(stats.glob("*.json"))) < 3:
        time.sleep(0.005)
    assert proc.poll() is None, "make_shards finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out_b = tmp_path / "b" / "out"
    assert not (out_b / "manifest.json").exists()
    finished = {p.stem for p in stats.glob("*.json")}
    assert 0 < len(finished) < n_shards
    before = {n: (out_b / f"{n}.tar").stat() for n in finished}

    r = run_tool("make_shards.py", *args, cwd=tmp_path / "b", env=env)
    assert f"({len(finished)} already done, {n_shards - len(finished)} built)" in r.stderr
    for n, st in before.items():  # finished shards were not rewritten
        now = (out_b / f"{n}.tar").stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    got = _digest(out_b)
    assert sorted(got) == sorted(ref)  # no temp files left behind
    assert not list(out_b.glob(".*.tmp"))
    for name in ref:
        assert got[name] == ref[name], name
    assert [p.name for p in (out_b / "stats").iterdir() if p.name.startswith(".")] == [".lock"]


def _write_csv_bytes(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"videoid,name,page_idx,page_dir,duration,contentUrl\n" + b"\n".join(lines) + b"\n")


def test_bad_rows_counted_by_reason(synthetic_corpus, tmp_path):
    good = sorted((Path(synthetic_corpus) / "videos").rglob("*.mp4"))[:2]
    root = tmp_path / "videos"
    (root / "p1").mkdir(parents=True)
    g = good[0].read_bytes()
    (root / "p1" / "100.mp4").write_bytes(g)
    (root / "p1" / "102.mp4").write_bytes(b"")
    (root / "p1" / "103.mp4").write_bytes(g[: len(g) * 2 // 5])
    (root / "p1" / "104.mp4").write_bytes(b"this is not a video\n" * 20)
    (root / "p1" / "105.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    for vid in ("106", "107", "108"):
        (root / "p1" / f"{vid}.mp4").write_bytes(g)
    (root / "p1" / "111.mp4").write_bytes(good[1].read_bytes())
    fs = encode(root / "p1" / "112.mp4", n=40, faststart=True).read_bytes()
    (root / "p1" / "112.mp4").write_bytes(fs[: len(fs) * 2 // 3])  # moov intact, frames cut
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "109.mp4").write_bytes(g)
    lines = [
        b"100,good one,0,p1,PT00H00M02S,u",  # line 2: good
        b"101,missing file,0,p1,PT00H00M02S,u",  # 3: missing_file
        b"102,zero bytes,0,p1,PT00H00M02S,u",  # 4: empty_file
        b"103,truncated,0,p1,PT00H00M02S,u",  # 5: undecodable
        b"104,text bytes,0,p1,PT00H00M02S,u",  # 6: undecodable
        b"105,random bytes,0,p1,PT00H00M02S,u",  # 7: undecodable
        b"106,,0,p1,PT00H00M02S,u",  # 8: empty_caption
        b'107,"   ",0,p1,PT00H00M02S,u',  # 9: empty_caption
        b"108,caf\xe9 latin-1,0,p1,PT00H00M02S,u",  # 10: invalid_utf8
        b"100,duplicate,0,p1,PT00H00M02S,u",  # 11: duplicate_id
        b"109,escapes,0,../outside,PT00H00M02S,u",  # 12: unsafe_path
        b"../../etc/passwd,escapes,0,p1,PT00H00M02S,u",  # 13: unsafe_path
        b"110,absolute,0,/etc,PT00H00M02S,u",  # 14: unsafe_path
        b"111,good two,0,p1,PT00H00M03S,u",  # 15: good
        b"112,truncated faststart,0,p1,PT00H00M04S,u",  # 16: undecodable
    ]
    _write_csv_bytes(tmp_path / "bad.csv", lines)
    r = run_tool(
        "make_shards.py",
        "--webvid-csv",
        tmp_path / "bad.csv",
        "--video-root",
        root,
        "--out",
        tmp_path / "out",
        "--samples-per-shard",
        5,
        "--no-progress",
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"] == {
        "missing_file": 1,
        "empty_file": 1,
        "undecodable": 4,
        "empty_caption": 2,
        "invalid_utf8": 1,
        "duplicate_id": 1,
        "unsafe_path": 3,
        "malformed_row": 0,
    }
    assert summary["samples"] == 2 and summary["rows"] == 15
    by_line = {b["line"]: b["reason"] for b in summary["bad_rows"]}
    assert by_line == {
        3: "missing_file",
        4: "empty_file",
        5: "undecodable",
        6: "undecodable",
        7: "undecodable",
        8: "empty_caption",
        9: "empty_caption",
        10: "invalid_utf8",
        11: "duplicate_id",
        12: "unsafe_path",
        13: "unsafe_path",
        14: "unsafe_path",
        16: "undecodable",
    }
    shard0 = json.loads((tmp_path / "out" / "stats" / "out-000000.json").read_text())
    assert shard0["skipped"] == {"missing_file": 1, "empty_file": 1, "undecodable": 2} and shard0["samples"] == 1
    assert "line 3" in r.stderr and "missing_file" in r.stderr
    # bytes that are not a video: FFmpeg's reason, on one printable line naming the row (decord's own message,
    # which quotes the bytes, stays off the terminal)
    details = {b["line"]: b["detail"] for b in summary["bad_rows"]}
    assert (
        details[6]
        == details[7]
        == "RuntimeError: decord cannot open the video: Invalid data found when processing input"
    )
    for vid in ("104", "105"):
        assert_one_skip_line(r.stderr, f"id='{vid}'", "undecodable: RuntimeError: decord cannot open the video")
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["num_samples"] == 2 and man["num_skipped"] == 13


def test_every_row_failing_exits_nonzero(tmp_path):
    (tmp_path / "videos").mkdir()
    _write_csv_bytes(tmp_path / "x.csv", [b"1,a,0,p,PT1S,u", b"2,b,0,p,PT1S,u"])
    r = run_tool(
        "make_shards.py",
        "--webvid-csv",
        tmp_path / "x.csv",
        "--video-root",
        tmp_path / "videos",
        "--out",
        tmp_path / "out",
        "--no-progress",
        check=False,
    )
    assert r.returncode == 2 and "every one of the 2 rows failed" in r.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
    (tmp_path / "y.csv").write_text("id,caption\n1,a\n")
    r = run_tool(
        "make_shards.py",
        "--webvid-csv",
        tmp_path / "y.csv",
        "--video-root",
        tmp_path / "videos",
        "--out",
        tmp_path / "out2",
        check=False,
    )
    assert r.returncode == 2 and "not a WebVid CSV" in r.stderr


def _unseen_corpus(synthetic_corpus, tmp_path):
    """A WebVid-format corpus wrong in new ways; returns (csv path, video root, expected good)."""
    root = tmp_path / "unseen" / "videos"
    g = sorted((Path(synthetic_corpus) / "videos").rglob("*.mp4"))[0].read_bytes()
    for vid in ("900", "901", "902", "clip 7é", "1.5"):
        (root / "q").mkdir(parents=True, exist_ok=True)
        (root / "q" / f"{vid}.mp4").write_bytes(g)
    encode(root / "q" / "903.mp4", "mpeg4", 200, 150, fps=12)
    encode(root / "q" / "904.mp4", "libvpx-vp9", 175, 99, fps=7)  # VP9, odd size
    (root / "q" / "905.mp4").mkdir()  # a directory named like a video
    outside = tmp_path / "unseen" / "elsewhere.mp4"
    outside.write_bytes(g)
    (root / "q" / "906.mp4").symlink_to(outside)  # escapes the root
    (root / "q" / "907.mp4").symlink_to(root / "q" / "900.mp4")  # stays inside: fine
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writerow(["videoid", "name", "page_idx", "page_dir", "duration", "contentUrl"])
    good = {
        "900": 'a "quoted", comma, caption',
        "901": "first line\nsecond line",
        "902": "日本語のキャプション — café 🎬",
        "903": "mpeg4 part 2 video",
        "904": "vp9 odd size video",
        "clip 7é": "id with a space and an accent",
        "1.5": "id with a dot",
        "907": "symlink inside the root",
    }
    for vid, cap in list(good.items())[:4]:
        w.writerow([vid, cap, "1", "q", "PT00H00M02S" if vid != "903" else "garbage", "http://x/y.mp4"])
    body = buf.getvalue()
    body += "\r\n"  # a blank line
    body += '904,"vp9 odd size video",1,q,PT00H00M01S,u,EXTRA\r\n'  # extra column: malformed
    body += "905,directory named like a video,1,q,PT1S,u\r\n"
    body += "906,symlink escaping the root,1,q,PT1S,u\r\n"
    body += "9999,too few fields\r\n"  # malformed
    body += '904,"vp9 odd size video",1,q,PT00H00M01S,u\r\n'
    for vid in ("clip 7é", "1.5", "907"):
        body += f'"{vid}","{good[vid]}",1,q,PT2S,u\r\n'
    path = tmp_path / "unseen" / "results_10M_val.csv"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    expected_skips = {"missing_file": 1, "unsafe_path": 1, "malformed_row": 2}
    return path, root, good, expected_skips


@pytest.mark.parametrize("mode", ["raw", "reencode", "frames"])
def test_unseen_webvid_corpus(synthetic_corpus, tmp_path, mode):
    from smaug.data import DataConfig, build_eval_loader

    csv_path, root, good, expected_skips = _unseen_corpus(synthetic_corpus, tmp_path)
    extra = {"raw": [], "reencode": ["--resize-short-side", 64, "--fps", 4], "frames": ["--frames", 3]}[mode]
    out = tmp_path / "shards"
    run_tool(
        "make_shards.py",
        "--webvid-csv",
        csv_path,
        "--video-root",
        root,
        "--out",
        out,
        "--samples-per-shard",
        4,
        "--workers",
        2,
        "--no-progress",
        *extra,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert {k: v for k, v in summary["skipped"].items() if v} == expected_skips
    assert summary["samples"] == len(good)
    by_id = {}
    for tar in sorted(out.glob("*.tar")):
        for key, mem in read_tar(tar)[0].items():
            assert "." not in key
            by_id[json.loads(mem["json"])["id"]] = (key, mem)
    assert set(by_id) == set(good)
    for vid, cap in good.items():
        key, mem = by_id[vid]
        assert mem["txt"].decode("utf-8") == " ".join(cap.split())
        meta = json.loads(mem["json"])
        if mode == "frames":
            assert sorted(k for k in mem if k.startswith("f")) == ["f000.jpg", "f001.jpg", "f002.jpg"]
        elif mode == "reencode":
            assert min(meta["width"], meta["height"]) <= 64 and meta["fps"] <= 4.0 + 1e-6
        else:
            assert meta["width"] == {"903": 200, "904": 175}.get(vid, meta["width"])
    # the loader reads every sample of every kind back
    from smaug.data.tokenizer import build_wordpiece_tokenizer

    tok = build_wordpiece_tokenizer(list(good.values()), tmp_path / "tok", vocab_size=200)
    cfg = DataConfig(
        eval_shards=str(out), shards_root=str(tmp_path), num_frames=3, image_size=32, batch_size=3, num_workers=0
    )
    keys = []
    for b in build_eval_loader(cfg, tok):
        assert b["video"].dtype.is_floating_point is False and b["video"].shape[1:] == (3, 3, 32, 32)
        keys += b["key"]
    assert sorted(keys) == sorted(k for k, _ in by_id.values())


def test_image_list_and_json_inputs(synthetic_corpus, tmp_path):
    from PIL import Image

    root = tmp_path / "img"
    root.mkdir()
    Image.new("RGB", (90, 60), (200, 10, 10)).save(root / "a.png")
    Image.new("RGB", (64, 48), (10, 200, 10)).save(root / "b.jpg", quality=90)
    (root / "c.jpg").write_bytes((root / "b.jpg").read_bytes()[:200])  # truncated JPEG
    (tmp_path / "list.tsv").write_bytes(
        b"caption\tpath\r\nred png\ta.png\r\ngreen jpeg\tb.jpg\textra column\r\n"
        b"cut jpeg\tc.jpg\r\nnot there\tz.jpg\r\n\tb.jpg\r\nescape\t../x.jpg\r\n"
    )
    out = tmp_path / "out"
    run_tool(
        "make_shards.py", "--image-list", tmp_path / "list.tsv", "--image-root", root, "--out", out, "--no-progress"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 2
    assert {k: v for k, v in summary["skipped"].items() if v} == {
        "undecodable": 1,
        "missing_file": 1,
        "empty_caption": 1,
        "unsafe_path": 1,
    }
    samples, _ = read_tar(next(out.glob("*.tar")))
    assert sorted(samples) == ["a", "b"] and all(set(m) == {"jpg", "txt", "json"} for m in samples.values())
    assert samples["b"]["jpg"] == (root / "b.jpg").read_bytes()  # a JPEG is stored as is
    assert samples["a"]["jpg"][:2] == b"\xff\xd8"  # PNG converted to JPEG
    assert json.loads((out / "manifest.json").read_text())["kind"] == "image"

    vids = Path(synthetic_corpus) / "videos"
    some = sorted(vids.rglob("*.mp4"))[0].relative_to(vids).as_posix()
    (tmp_path / "e.json").write_text(
        json.dumps(
            [
                {"video": some, "caption": ["one", "two"]},
                {"video": some, "caption": "dup"},
                {"video": "/etc/passwd", "caption": "abs"},
                {"caption": "no video"},
                {"video": "nope.mp4", "caption": []},
            ]
        )
    )
    run_tool(
        "make_shards.py",
        "--json",
        tmp_path / "e.json",
        "--video-root",
        vids,
        "--out",
        tmp_path / "jout",
        "--no-progress",
    )
    summary = json.loads((tmp_path / "jout" / "summary.json").read_text())
    assert {k: v for k, v in summary["skipped"].items() if v} == {
        "duplicate_id": 1,
        "unsafe_path": 1,
        "malformed_row": 1,
        "empty_caption": 1,
    }


def _load_tool(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_decoder_crash_or_hang_costs_only_that_row(synthetic_corpus, tmp_path, monkeypatch):
    """A row whose decoding kills or hangs the process is skipped as undecodable; the run goes on."""
    from smaug.data import shardwriter

    c = Path(synthetic_corpus)
    lines = (c / "results_2M_train.csv").read_text(encoding="utf-8").splitlines(keepends=True)[:7]
    (tmp_path / "rows.csv").write_text("".join(lines), encoding="utf-8")
    ids = [line.split(",")[0] for line in lines[1:]]
    crash, hang = ids[1], ids[4]
    real = shardwriter.sample_members

    def flaky(row, *args):
        if row.id == crash:
            import faulthandler

            faulthandler.disable()  # pytest's handler would print a dump for this intended crash
            os.kill(os.getpid(), signal.SIGSEGV)
        if row.id == hang:
            time.sleep(3600)
        return real(row, *args)

    monkeypatch.setattr(shardwriter, "sample_members", flaky)  # forked shard processes inherit it
    tool = _load_tool("make_shards")
    rc = tool.main(
        [
            "--webvid-csv",
            str(tmp_path / "rows.csv"),
            "--video-root",
            str(c / "videos"),
            "--out",
            str(tmp_path / "out"),
            "--samples-per-shard",
            "3",
            "--workers",
            "2",
            "--row-timeout",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["samples"] == 4 and summary["skipped"]["undecodable"] == 2
    details = {b["id"]: b["detail"] for b in summary["bad_rows"]}
    assert "crashed" in details[crash] and "timed out" in details[hang]


def test_webvid_mirror_csv_any_column_order(synthetic_corpus, tmp_path):
    """Mirrors of WebVid publish other column orders and drop columns (e.g.
    `videoid,contentUrl,duration,page_dir,name`, no page_idx): columns are found by name."""
    rows = csv_rows(Path(synthetic_corpus) / "results_2M_train.csv")[:5]
    path = tmp_path / "mirror.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        for r in rows:
            w.writerow([r["videoid"], r["contentUrl"], r["duration"], r["page_dir"], r["name"]])
    out = tmp_path / "shards"
    run_tool(
        "make_shards.py",
        "--webvid-csv",
        path,
        "--video-root",
        Path(synthetic_corpus) / "videos",
        "--out",
        out,
        "--samples-per-shard",
        4,
        "--no-progress",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == len(rows) and not any(summary["skipped"].values())
    got = {}
    for tar in sorted(out.glob("*.tar")):
        for mem in read_tar(tar)[0].values():
            got[json.loads(mem["json"])["id"]] = mem["txt"].decode("utf-8")
    assert got == {r["videoid"]: " ".join(r["name"].split()) for r in rows}
    # a header that lacks a required column is refused, naming it
    bad = tmp_path / "bad.csv"
    bad.write_text("videoid,contentUrl,duration,name\n1,u,PT1S,a caption\n")
    r = run_tool(
        "make_shards.py",
        "--webvid-csv",
        bad,
        "--video-root",
        tmp_path,
        "--out",
        tmp_path / "b",
        "--no-progress",
        check=False,
    )
    assert r.returncode != 0 and "page_dir" in (r.stdout + r.stderr)
