"""The benchmark readers (smaug/data/benchmarks/) on fixtures written in each release's own layout (file names,
columns, id forms, extensions, folders), the benchmarks YAML's validation, and tools/eval_benchmarks.py end to
end on the tiny pre-trained run: the table, and a second run that resumes.

The reader tests need only the files to exist (a video is found, not decoded); the end-to-end test lays the
synthetic corpus's held-out clips out as MSR-VTT and DiDeMo releases (real H.264 files under the releases' names
and extensions), with listed videos missing from the "download".
"""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import tool_in_process

PLACEHOLDER = b"not decoded by the reader tests"


def video(root: Path, rel: str, src=None) -> None:
    """A video file at root/rel: a copy of `src`, else a placeholder."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if src is None:
        path.write_bytes(PLACEHOLDER)
    else:
        shutil.copyfile(src, path)


def write_csv(path: Path, header, rows, delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- MSR-VTT
def msrvtt_release(root: Path) -> dict:
    """videos/all/video<N>.mp4 for 7010-7014 and 0-3 (7013 and 2 missing from the download), the 1k-A CSV, the
    official JSONs (20 captions per video there: 3 here, interleaved across videos as the release orders them),
    MSR_MC_test.csv and MSRVTT-QA."""
    vids = root / "videos" / "all"
    for n in (7010, 7011, 7012, 7014, 0, 1, 3):
        video(vids, f"video{n}.mp4")
    ka = write_csv(
        root / "MSRVTT_JSFUSION_test.csv",
        ["key", "vid_key", "video_id", "sentence"],
        [
            ["ret0", "msr7010", "video7010", "a man is  singing"],
            ["ret1", "msr7011", "video7011", "a dog runs"],
            ["ret2", "msr7012", "video7012", " "],  # empty sentence: an unusable row
            ["ret3", "msr7013", "video7013", "a car drives"],  # its video is not in the download
            ["ret4", "msr7014", "video7014", "people dance"],
        ],
    )
    train_val = {
        "info": {"year": 2016},
        "videos": [
            {"video_id": "video0", "split": "train", "id": 0, "category": 9},
            {"video_id": "video1", "split": "validate", "id": 1, "category": 2},
            {"video_id": "video2", "split": "train", "id": 2, "category": 2},
        ],
        "sentences": [
            {"caption": f"caption {c} of video{v}", "video_id": f"video{v}", "sen_id": 3 * c + v}
            for c in range(3)
            for v in range(3)
        ],
    }
    test = {
        "videos": [{"video_id": f"video{n}", "split": "test", "id": n} for n in (7010, 7011, 7013, 7014, 3)],
        "sentences": [
            {"caption": f"test caption {c} of video{n}", "video_id": f"video{n}", "sen_id": 100 + c}
            for c in range(2)
            for n in (7010, 7011, 7013, 7014, 3)
        ],
    }
    mc = write_csv(
        root / "MSR_MC_test.csv",
        ["key", "vid_key", "video_id", "a1", "a2", "a3", "a4", "a5", "answer"],
        [
            ["mc0", "msr7010", "video7010", "a", "b", "c", "d", "e", "0"],
            ["mc1", "msr7011", "video7011", "a", "b", "c", "d", "e", "4"],
            ["mc2", "msr7013", "video7013", "a", "b", "c", "d", "e", "2"],  # missing video
            ["mc3", "msr7014", "video7014", "a", "b", "c", "d", "e", "5"],  # answer out of range
        ],
        delimiter="\t",
    )
    qa = [
        {"answer": "man", "category_id": 0, "id": 0, "question": "who is singing", "video_id": 7010},
        {"answer": "dog", "category_id": 1, "id": 1, "question": "what runs", "video_id": 7011},
        {"answer": "road", "category_id": 0, "id": 2, "question": "where does a car drive", "video_id": 7013},
        {"answer": "", "category_id": 0, "id": 3, "question": "how many", "video_id": 7014},
    ]
    return {
        "videos": vids,
        "1ka": ka,
        "train_val": write_json(root / "train_val_videodatainfo.json", train_val),
        "test": write_json(root / "test_videodatainfo.json", test),
        "mc": mc,
        "qa": write_json(root / "test_qa.json", qa),
    }


def test_msrvtt_1ka_reads_one_sentence_per_clip_and_counts_missing_videos(tmp_path):
    from smaug.data.benchmarks import msrvtt
    from smaug.data.benchmarks.common import VideoFinder

    r = msrvtt_release(tmp_path)
    s = msrvtt.read_1ka(str(r["1ka"]), VideoFinder(str(r["videos"])))
    assert [c.id for c in s.clips] == ["video7010", "video7011", "video7013", "video7014"]
    assert s.rows() == [
        {"video": "video7010.mp4", "caption": ["a man is singing"]},
        {"video": "video7011.mp4", "caption": ["a dog runs"]},
        {"video": "video7014.mp4", "caption": ["people dance"]},
    ]
    cov = s.coverage().to_json()
    assert (cov["clips_found"], cov["clips_listed"], cov["items_found"], cov["items_listed"]) == (3, 4, 3, 4)
    assert cov["missing_ids"] == ["video7013"] and cov["bad_rows"] == {"empty_caption": 1}
    assert not s.paragraph and "1k-A" in s.protocol


def test_msrvtt_official_jsons_give_the_7k_9k_and_full_test_splits(tmp_path):
    from smaug.data.benchmarks import msrvtt
    from smaug.data.benchmarks.common import VideoFinder

    r = msrvtt_release(tmp_path)
    f = VideoFinder(str(r["videos"]))
    both = [str(r["train_val"]), str(r["test"])]
    k7 = msrvtt.read_train([str(r["train_val"])], f, "7k")
    assert [c.id for c in k7.clips] == ["video0", "video1", "video2"]
    assert k7.clips[1].captions == [f"caption {c} of video1" for c in range(3)]  # all captions, file order
    assert [c.id for c in k7.clips if not c.video] == ["video2"]
    k9 = msrvtt.read_train(both, f, "9k", str(r["1ka"]))  # every video but the 1k-A test clips
    assert [c.id for c in k9.clips] == ["video0", "video1", "video2", "video3"]
    full = msrvtt.read_videodatainfo([str(r["test"])], f, ("test",))
    cov = full.coverage()
    assert (cov.clips_found, cov.clips_listed, cov.items_found, cov.items_listed) == (4, 5, 8, 10)
    assert full.rows()[0] == {
        "video": "video7010.mp4",
        "caption": ["test caption 0 of video7010", "test caption 1 of video7010"],
    }


def test_msrvtt_mc_and_qa_readers(tmp_path):
    from smaug.data.benchmarks import msrvtt
    from smaug.data.benchmarks.common import VideoFinder

    r = msrvtt_release(tmp_path)
    f = VideoFinder(str(r["videos"]))
    mc = msrvtt.read_mc(str(r["mc"]), f)
    assert mc.rows() == [
        {"video": "video7010.mp4", "caption": list("abcde"), "answer": 0},
        {"video": "video7011.mp4", "caption": list("abcde"), "answer": 4},
    ]
    cov = mc.coverage()
    assert (cov.items_found, cov.items_listed, cov.missing, cov.bad_rows) == (
        2,
        3,
        ["video7013"],
        {"answer_out_of_range": 1},
    )
    qa = msrvtt.read_qa(str(r["qa"]), f, "test")
    assert [(x["video"], x["type"]) for x in qa.rows()] == [("video7010.mp4", "who"), ("video7011.mp4", "what")]
    assert qa.coverage().missing == ["video7013"] and qa.coverage().bad_rows == {"empty_answer": 1}


# ---------------------------------------------------------------------------- DiDeMo, ActivityNet
DIDEMO = [  # (file name in the release, file on disk or None when the download lacks it)
    ("10015567@N08_3655084291_d8b58466fa.mov", "10015567@N08_3655084291_d8b58466fa.mov"),
    ("13465271@N05_3497640929_1c3587b4b6.3gp", "13465271@N05_3497640929_1c3587b4b6.3gp"),
    ("24835792@N00_3339440117_4a9f3c1e4f.m4v", "24835792@N00_3339440117_4a9f3c1e4f.mp4"),  # re-encoded download
    ("34853234@N00_4452330862_08b43b5f70.avi", "34853234@N00_4452330862_08b43b5f70.avi"),
    ("45102218@N00_2917433813_3fa0bb0ab9", "45102218@N00_2917433813_3fa0bb0ab9.mp4"),  # no extension listed
    ("61547296@N00_4373524418_9fe2c6e2a7.mp4", None),
]


def didemo_release(root: Path, sources=None, per_video: int = 2) -> dict:
    """test_data.json: `per_video` descriptions per video, the entries of different videos interleaved (as the
    release orders moments), and the Flickr files with their upload's extensions."""
    entries = []
    for j in range(per_video):
        for i, (name, _) in enumerate(DIDEMO):
            entries.append(
                {
                    "annotation_id": 100 * i + j,
                    "description": f"moment {j} of clip {i}" if sources is None else sources[i][1][j],
                    "video": name,
                    "times": [[j, j + 1]] * 4,
                    "dl_link": "http://www.flickr.com/videos/x/y/",
                }
            )
    for i, (_, disk) in enumerate(DIDEMO):
        if disk:
            video(root / "videos", disk, None if sources is None else sources[i][0])
    return {"videos": root / "videos", "test": write_json(root / "test_data.json", entries)}


def test_didemo_paragraphs_join_each_videos_descriptions_in_file_order(tmp_path):
    from smaug.data.benchmarks import didemo
    from smaug.data.benchmarks.common import VideoFinder

    r = didemo_release(tmp_path, per_video=3)
    s = didemo.read_didemo(str(r["test"]), VideoFinder(str(r["videos"])))
    assert s.paragraph and [c.id for c in s.clips] == [n for n, _ in DIDEMO]
    rows = s.rows()
    assert [x["video"] for x in rows] == [d for _, d in DIDEMO if d]  # .m4v listed, .mp4 on disk; no extension
    assert rows[2]["caption"] == ["moment 0 of clip 2 moment 1 of clip 2 moment 2 of clip 2"]  # one query
    cov = s.coverage()
    assert (cov.clips_found, cov.clips_listed, cov.items_found, cov.items_listed) == (5, 6, 5, 6)
    assert cov.missing == [DIDEMO[-1][0]]


def test_activitynet_captions_paragraphs_and_qa(tmp_path):
    from smaug.data.benchmarks import activitynet
    from smaug.data.benchmarks.common import VideoFinder

    videos = tmp_path / "videos"
    video(videos, "v_QOlSCBRmfWY.mp4")
    video(videos, "ehGHCYKzyZ8.mkv")  # a download that dropped the v_
    video(videos, "v_nwznKOuZM7w.webm")
    caps = {
        "v_QOlSCBRmfWY": {
            "duration": 82.7,
            "timestamps": [[0.8, 19.9], [17.4, 60.8]],
            "sentences": ["A girl.", " Then  she dances."],
        },
        "v_ehGHCYKzyZ8": {"duration": 61.7, "timestamps": [[0, 10]], "sentences": ["Two men box."]},
        "v_gone1234567": {"duration": 10.0, "timestamps": [[0, 1]], "sentences": ["Nobody."]},
        "v_nwznKOuZM7w": {"duration": 50.0, "timestamps": [[0, 1], [2, 3]], "sentences": ["First.", "Second."]},
    }
    f = VideoFinder(str(videos))
    s = activitynet.read_captions(str(write_json(tmp_path / "val_1.json", caps)), f)
    assert s.paragraph and s.rows() == [
        {"video": "v_QOlSCBRmfWY.mp4", "caption": ["A girl. Then she dances."]},
        {"video": "ehGHCYKzyZ8.mkv", "caption": ["Two men box."]},
        {"video": "v_nwznKOuZM7w.webm", "caption": ["First. Second."]},
    ]
    assert s.coverage().missing == ["v_gone1234567"]
    q = [
        {"video_name": "QOlSCBRmfWY", "question_id": "v_QOlSCBRmfWY_0", "question": "is the girl dancing"},
        {"video_name": "ehGHCYKzyZ8", "question_id": "v_ehGHCYKzyZ8_1", "question": "what do they do"},
        {"video_name": "gone1234567", "question_id": "v_gone1234567_0", "question": "who is there"},
        {"video_name": "nwznKOuZM7w", "question_id": "v_nwznKOuZM7w_3", "question": "unanswered"},
    ]
    a = [
        {"question_id": "v_QOlSCBRmfWY_0", "answer": "yes", "type": 3},
        {"question_id": "v_ehGHCYKzyZ8_1", "answer": "box", "type": 0},
        {"question_id": "v_gone1234567_0", "answer": "man", "type": 5},
    ]
    qa = activitynet.read_qa(
        str(write_json(tmp_path / "test_q.json", q)), str(write_json(tmp_path / "test_a.json", a)), f, "test"
    )
    assert qa.rows() == [
        {"video": "v_QOlSCBRmfWY.mp4", "question": "is the girl dancing", "answer": "yes", "type": "3"},
        {"video": "ehGHCYKzyZ8.mkv", "question": "what do they do", "answer": "box", "type": "0"},
    ]
    cov = qa.coverage()
    assert (cov.items_found, cov.items_listed, cov.missing, cov.bad_rows) == (2, 3, ["v_gone1234567"], {"no_answer": 1})


# ---------------------------------------------------------------------------- MSVD, LSMDC
def test_msvd_every_description_of_a_listed_clip_is_a_query(tmp_path):
    from smaug.data.benchmarks import msvd
    from smaug.data.benchmarks.common import VideoFinder

    (tmp_path / "AllVideoDescriptions.txt").write_text(
        "# Microsoft Research Video Description Corpus\n#\n# one description per line\n\n"
        "-4wsuPCjDBc_5_15 a squirrel is eating a peanut\n"
        "-4wsuPCjDBc_5_15 a chipmunk eats\n"
        "-7KMZQEsJW4_205_208 a woman is cutting\n"
        "00jrXRMlZOY_0_10 a man rides\n"
        "-4wsuPCjDBc_5_15 the animal eats something\n"
        "zzz_train_1_2 a training clip\n",
        encoding="utf-8",
    )
    (tmp_path / "test_list.txt").write_text("-4wsuPCjDBc_5_15\n00jrXRMlZOY_0_10\n-7KMZQEsJW4_205_208\n")
    video(tmp_path, "YouTubeClips/-4wsuPCjDBc_5_15.avi")
    video(tmp_path, "YouTubeClips/-7KMZQEsJW4_205_208.avi")
    s = msvd.read_msvd(
        str(tmp_path / "AllVideoDescriptions.txt"), str(tmp_path / "test_list.txt"), VideoFinder(str(tmp_path))
    )
    assert [c.id for c in s.clips] == ["-4wsuPCjDBc_5_15", "00jrXRMlZOY_0_10", "-7KMZQEsJW4_205_208"]  # list order
    assert s.rows()[0] == {
        "video": "YouTubeClips/-4wsuPCjDBc_5_15.avi",
        "caption": ["a squirrel is eating a peanut", "a chipmunk eats", "the animal eats something"],
    }
    cov = s.coverage()
    assert (cov.clips_found, cov.clips_listed, cov.items_found, cov.items_listed) == (2, 3, 4, 5)
    assert cov.missing == ["00jrXRMlZOY_0_10"]


def test_lsmdc_header_less_tsv_and_per_movie_folders(tmp_path):
    from smaug.data.benchmarks import lsmdc
    from smaug.data.benchmarks.common import VideoFinder

    a, b = "1010_TITANIC_00.41.32.072-00.41.40.196", "3009_BATTLE_LOS_ANGELES_00.03.07.170-00.03.09.675"
    c = "1012_Unbreakable_00.05.16.065-00.05.21.941"
    lines = [
        [a, "00.41.32.072", "00.41.40.196", "00.41.32.072", "00.41.40.196", "SOMEONE looks at the sea."],
        [b, "00.03.07.170", "00.03.09.675", "00.03.07.170", "00.03.09.675", "A helicopter lands."],
        [a, "00.41.32.072", "00.41.40.196", "00.41.32.072", "00.41.40.196", "He turns."],  # a training repeat
        [c, "00.05.16.065", "00.05.21.941", "00.05.16.065", "00.05.21.941", "SOMEONE waits."],
        ["broken line without fields"],
    ]
    path = write_csv(tmp_path / "LSMDC16_annos_training.csv", None, lines, delimiter="\t")
    video(tmp_path / "avi", f"1010_TITANIC/{a}.avi")
    video(tmp_path / "avi", f"3009_BATTLE_LOS_ANGELES/{b}.avi")
    s = lsmdc.read_lsmdc(str(path), VideoFinder(str(tmp_path / "avi")), "train")
    assert s.rows() == [
        {"video": f"1010_TITANIC/{a}.avi", "caption": ["SOMEONE looks at the sea.", "He turns."]},
        {"video": f"3009_BATTLE_LOS_ANGELES/{b}.avi", "caption": ["A helicopter lands."]},
    ]
    cov = s.coverage()
    assert (cov.clips_found, cov.clips_listed, cov.items_found, cov.items_listed) == (2, 3, 3, 4)
    assert cov.missing == [c] and cov.bad_rows == {"malformed_row": 1}


def test_video_finder_prefers_the_extension_the_release_names(tmp_path):
    from smaug.data.benchmarks.common import VideoFinder

    for rel in ("a/x.mkv", "a/x.mp4", "b/y.MOV", "c/z_00.41.32.072.avi", "notes.txt"):
        video(tmp_path, rel)
    f = VideoFinder(str(tmp_path))
    assert len(f) == 4  # notes.txt is not a video
    assert f.find("a/x.mp4") == "a/x.mp4" and f.find("a/x.webm") == "a/x.mkv" and f.find("x.mp4") == "a/x.mp4"
    assert f.find("y") == "b/y.MOV" and f.find("z_00.41.32.072") == "c/z_00.41.32.072.avi"
    assert f.find("missing", "also_missing.mp4") is None


def test_preprocessed_json_keeps_working(tmp_path):
    from smaug.data.benchmarks import preprocessed
    from smaug.data.benchmarks.common import VideoFinder

    video(tmp_path, "videos/a.mp4")
    video(tmp_path, "videos/sub/b.mp4")
    rows = [
        {"image": "a.mp4", "caption": "one"},  # Singularity's key
        {"video": "sub/b.mp4", "caption": ["two", "three"]},
        {"video": "a.mp4", "caption": ["four"]},  # the same clip again: its captions join it, in file order
        {"video": "gone.mp4", "caption": "five"},
        {"video": "a.mp4"},
    ]
    f = VideoFinder(str(tmp_path / "videos"))
    s = preprocessed.read_retrieval(str(write_json(tmp_path / "r.json", rows)), f, "test", paragraph=True)
    assert s.rows() == [{"video": "a.mp4", "caption": ["one four"]}, {"video": "sub/b.mp4", "caption": ["two three"]}]
    cov = s.coverage()
    assert (cov.clips_found, cov.clips_listed, cov.missing, cov.bad_rows) == (2, 3, ["gone.mp4"], {"malformed_row": 1})
    mc = [{"video": "a.mp4", "caption": ["x", "y"], "answer": 1}, {"video": "gone.mp4", "caption": ["x"], "answer": 0}]
    m = preprocessed.read_mc(str(write_json(tmp_path / "mc.json", mc)), f, "test")
    assert m.rows() == [mc[0]] and m.coverage().missing == ["gone.mp4"]
    qa = [{"video": "sub/b.mp4", "question": "q?", "answer": "a", "type": "what"}, {"video": "a.mp4", "question": "q"}]
    q = preprocessed.read_qa(str(write_json(tmp_path / "qa.json", qa)), f, "test")
    assert q.rows() == [qa[0]] and q.coverage().bad_rows == {"empty_answer": 1}


# ---------------------------------------------------------------------------- the YAML
def test_benchmarks_yaml_is_validated_before_any_compute(tmp_path):
    from smaug.data.benchmarks.config import BenchmarkError, load_suite

    r = msrvtt_release(tmp_path)
    good = {"videos": "videos/all", "test": "MSRVTT_JSFUSION_test.csv"}

    def suite(benchmarks, **top):
        path = tmp_path / "b.yaml"
        path.write_text(json.dumps({**top, "benchmarks": benchmarks}))  # JSON is YAML
        return load_suite(str(path))

    s = suite(
        {"msrvtt": good, "mc": {"kind": "msrvtt_mc", "videos": "videos/all", "test": "MSR_MC_test.csv"}}, frames=8
    )
    assert [(b.name, b.kind, b.tasks, b.frames, b.k) for b in s.benchmarks] == [
        ("msrvtt", "msrvtt", ["zero_shot"], 8, 128),
        ("mc", "msrvtt_mc", ["mc"], 8, 128),
    ]
    assert s.benchmarks[0].test == [str(r["1ka"])]  # relative to the YAML's folder
    assert s.benchmarks[0].max_text_len == 0  # sentence queries: the checkpoint's own length
    dd = didemo_release(tmp_path / "dd")
    assert suite({"didemo": {"videos": str(dd["videos"]), "test": str(dd["test"])}}).benchmarks[0].max_text_len == 64
    cases = [
        ({"msvdd": good}, "benchmarks.msvdd.kind: unknown benchmark 'msvdd'"),
        ({"msrvtt": {**good, "test": "nope.csv"}}, "benchmarks.msrvtt.test: annotation file .*nope.csv does not exist"),
        ({"msrvtt": {**good, "videos": "nowhere"}}, "benchmarks.msrvtt.videos: .*nowhere is not a folder"),
        ({"msrvtt": {**good, "frame": 4}}, "benchmarks.msrvtt.frame: unknown key"),
        ({"msrvtt": {**good, "tasks": ["qa"]}}, r"benchmarks.msrvtt.tasks: \['qa'\] not tasks of msrvtt"),
        ({"msrvtt": {**good, "tasks": ["finetune"]}}, "benchmarks.msrvtt.train: 1 to 2 file.s. expected, got 0"),
        ({"msrvtt": {**good, "descriptions": "x.txt"}}, "benchmarks.msrvtt.descriptions: msrvtt has no descriptions"),
        ({"../x": {**good, "kind": "msrvtt"}}, "benchmarks.../x: a benchmark's name is its output folder's"),
    ]
    for benchmarks, message in cases:
        with pytest.raises(BenchmarkError, match=message):
            suite(benchmarks)
    with pytest.raises(BenchmarkError, match="suite.frame: unknown key"):
        suite({"msrvtt": good}, frame=4)
    with pytest.raises(BenchmarkError, match="suite.names: unknown key"):  # filled in by load_suite, not a setting
        suite({"msrvtt": good}, names=["x"])


def test_tool_refuses_a_bad_yaml_and_a_release_without_videos(tmp_path):
    msrvtt_release(tmp_path)
    (tmp_path / "empty").mkdir()
    for bench, message in (
        ({"msrvtt": {"videos": "videos/all", "test": "missing.csv"}}, "annotation file .*missing.csv does not exist"),
        ({"msrvtt": {"videos": "empty", "test": "MSRVTT_JSFUSION_test.csv"}}, "none of the 4 videos its test file"),
    ):
        (tmp_path / "b.yaml").write_text(json.dumps({"benchmarks": bench}))
        r = tool_in_process(
            "eval_benchmarks.py",
            "--checkpoint",
            tmp_path,
            "--benchmarks",
            tmp_path / "b.yaml",
            "--out",
            tmp_path / "o",
            check=False,
        )
        assert r.returncode == 2 and re.search(message, r.stderr), r.stderr


# ---------------------------------------------------------------------------- the one command, end to end
def msrvtt_from_synthetic(c: Path, rel: Path) -> dict:
    """An MSR-VTT release over the synthetic corpus: 8 training clips as video0-7 (train / validate in
    train_val_videodatainfo.json), 6 held-out clips as video7010-7015 (test_videodatainfo.json, the 1k-A CSV,
    MSR_MC_test.csv), video9999 listed everywhere but missing from the download; MSRVTT-QA on the same clips."""
    held_out = json.loads((c / "eval.json").read_text())[:6]
    train = [x for x in json.loads((c / "labels.json").read_text())["clips"] if x["split"] == "train"][:8]
    names = {Path(x["video"]).name: f"video{7010 + i}" for i, x in enumerate(held_out)}
    names.update({Path(x["relpath"]).name: f"video{i}" for i, x in enumerate(train)})
    for src in [x["video"] for x in held_out] + [x["relpath"] for x in train]:
        video(rel / "videos" / "all", f"{names[Path(src).name]}.mp4", c / "videos" / src)
    write_csv(
        rel / "MSRVTT_JSFUSION_test.csv",
        ["key", "vid_key", "video_id", "sentence"],
        [[f"ret{i}", f"msr{7010 + i}", f"video{7010 + i}", x["caption"][0]] for i, x in enumerate(held_out)]
        + [["ret99", "msr9999", "video9999", "a clip the download lacks"]],
    )
    videos = [{"video_id": f"video{i}", "split": ("train", "validate")[i % 2], "id": i} for i in range(8)]
    sentences = [{"video_id": f"video{i}", "caption": x["caption"], "sen_id": i} for i, x in enumerate(train)]
    write_json(rel / "train_val_videodatainfo.json", {"videos": videos, "sentences": sentences})
    videos = [{"video_id": names[Path(x["video"]).name], "split": "test"} for x in held_out]
    sentences = [{"video_id": names[Path(x["video"]).name], "caption": cap} for x in held_out for cap in x["caption"]]
    write_json(rel / "test_videodatainfo.json", {"videos": videos, "sentences": sentences})
    mc = [r for r in json.loads((c / "mc_test.json").read_text()) if Path(r["video"]).name in names][:6]
    write_csv(
        rel / "MSR_MC_test.csv",
        ["key", "vid_key", "video_id", "a1", "a2", "a3", "a4", "a5", "answer"],
        [[f"mc{i}", "", names[Path(r["video"]).name], *r["caption"], r["answer"]] for i, r in enumerate(mc)]
        + [["mc99", "msr9999", "video9999", "a", "b", "c", "d", "e", 1]],
        delimiter="\t",
    )
    qa = {"train": json.loads((c / "qa_train.json").read_text()), "test": json.loads((c / "qa_test.json").read_text())}
    for split, rows in qa.items():
        rows = [q for q in rows if Path(q["video"]).name in names][:8]
        qa[split] = [
            {"answer": q["answer"], "category_id": 0, "id": j, "question": q["question"], "video_id": int(v[5:])}
            for j, q in enumerate(rows)
            for v in [names[Path(q["video"]).name]]
        ]
        write_json(rel / f"{split}_qa.json", qa[split])
    return {"clips": [(c / "videos" / x["video"], x["caption"]) for x in held_out], "qa": qa}


@pytest.mark.slow
def test_eval_benchmarks_writes_the_table_and_resumes(pretrained_run, synthetic_corpus, tmp_path, forked_steps):
    """MSR-VTT (1k-A, MC, QA) and DiDeMo releases over synthetic clips, each with a listed video the download lacks:
    zero-shot retrieval (both directions, VTC / VTM / combined), retrieval fine-tuning on the 9k split (shards made
    from the release's JSONs), paragraph retrieval, multiple choice, QA fine-tuning; then the same command again
    keeps every row."""
    ms = msrvtt_from_synthetic(Path(synthetic_corpus), tmp_path / "msrvtt")
    clips, qa_train, qa_test = ms["clips"], ms["qa"]["train"], ms["qa"]["test"]
    dd = didemo_release(tmp_path / "didemo", sources=clips)
    yaml_path = tmp_path / "benchmarks.yaml"
    yaml_path.write_text(
        "frames: 2\nk: 3\nbatch_size: 4\nworkers: 0\nbenchmarks:\n"
        "  msrvtt: {videos: msrvtt/videos/all, test: msrvtt/MSRVTT_JSFUSION_test.csv, tasks: [zero_shot, finetune],\n"
        "           train: [msrvtt/train_val_videodatainfo.json, msrvtt/test_videodatainfo.json]}\n"
        "  msrvtt_mc: {videos: msrvtt/videos/all, test: msrvtt/MSR_MC_test.csv}\n"
        f"  didemo: {{videos: {dd['videos']}, test: {dd['test']}, max_text_len: 24}}\n"
        "  msrvtt_qa: {videos: msrvtt/videos/all, train: msrvtt/train_qa.json, test: msrvtt/test_qa.json}\n"
        "qa_overrides: [train.steps=2, optim.warmup_steps=1, log.progress=false, data.batch_size=4, data.num_workers=1]\n"
        "finetune_overrides: [train.steps=2, optim.warmup_steps=1, log.progress=false, data.batch_size=4,\n"
        "  data.num_workers=1, eval.every=0]\n"
    )
    out = tmp_path / "out"
    args = ["--checkpoint", pretrained_run, "--benchmarks", yaml_path, "--out", out]
    r = tool_in_process("eval_benchmarks.py", *args)
    doc = json.loads((out / "benchmarks.json").read_text())
    rows = {(x["name"], x["task"]): x for x in doc["rows"]}
    assert list(rows) == [
        ("msrvtt", "zero_shot"),
        ("msrvtt", "finetune"),
        ("msrvtt_mc", "mc"),
        ("didemo", "zero_shot"),
        ("msrvtt_qa", "qa"),
    ]
    assert all(x["status"] == "done" and x["frames"] == 2 for x in doc["rows"])
    assert [x["step"] for x in doc["rows"]] == [8, 2, 8, 8, 2]  # fine-tuned rows: the fine-tuned run's last step
    assert all(x["init"]["step"] == 8 for x in doc["rows"])
    ft = rows["msrvtt", "finetune"]
    assert ft["evaluated"]["clips"] == 6 and Path(ft["checkpoint"]).parent.parent.name == "run"
    assert len(json.loads((out / "msrvtt" / "train.json").read_text())) == 8  # 9k: every clip but the 1k-A test
    (shards,) = (out / "msrvtt").glob("finetune-*/run/shards/train/manifest.json")
    assert json.loads(shards.read_text())["num_samples"] == 8  # shards of the release's training split
    m = rows["msrvtt", "zero_shot"]
    assert m["task"] == "zero_shot" and m["ranking"] == "vtm" and set(m["rankings"]) == {"vtc", "vtm", "combined"}
    assert (
        m["coverage"]["clips_listed"] == 7
        and m["coverage"]["clips_found"] == 6
        and m["coverage"]["missing_ids"] == ["video9999"]
    )
    assert m["evaluated"] == {"clips": 6, "items": 6, "skipped": {}} and m["chance"]["t2v_r1"] == pytest.approx(100 / 6)
    assert m["t2v"] == m["rankings"]["vtm"]["t2v"] and m["k"] == 3
    assert rows["msrvtt_mc", "mc"]["evaluated"]["items"] == 6 and rows["msrvtt_mc", "mc"]["chance"] == pytest.approx(
        20.0
    )
    assert rows["msrvtt_mc", "mc"]["coverage"]["items_listed"] == 7
    d = rows["didemo", "zero_shot"]
    assert d["evaluated"]["items"] == 5 and d["coverage"]["clips_listed"] == 6 and d["max_text_len"] == 24  # paragraphs
    q = rows["msrvtt_qa", "qa"]
    assert (
        q["task"] == "qa" and q["evaluated"]["items"] == len(qa_test) and q["coverage"]["items_found"] == len(qa_test)
    )
    assert 0 <= q["accuracy"] <= 100 and q["chance_kind"] == "majority training answer" and q["k"] == 3
    answers = json.loads((out / "msrvtt_qa" / "answer_list.json").read_text())
    assert sorted(answers) == sorted({x["answer"] for x in qa_train})  # the training answers
    test_rows = json.loads((out / "didemo" / "test.json").read_text())
    assert test_rows[0]["caption"] == [" ".join(clips[0][1])]  # the descriptions joined, in file order
    md = (out / "benchmarks.md").read_text()
    assert "| msrvtt | zero-shot | vtm |" in md and "| msrvtt_mc | zero-shot MC |" in md and "6/7 |" in md
    assert "missing videos: 1 (e.g. video9999)" in md and "## Retrieval, every ranking" in md
    assert "trained on train 9k: 8/8 clips found (8/8 captions)" in md
    assert r.stdout.count("[eval_benchmarks] msrvtt: zero-shot retrieval:") == 1

    again = tool_in_process("eval_benchmarks.py", *args)  # resumes: nothing recomputed
    assert "zero-shot retrieval:" not in again.stdout and "multiple choice:" not in again.stdout
    assert again.stdout.count("done for this checkpoint") == 5 and "fine-tuning" not in again.stdout
    assert json.loads((out / "benchmarks.json").read_text())["rows"] == doc["rows"]

    yaml_path.write_text(yaml_path.read_text().replace("max_text_len: 24", "max_text_len: 20"))
    third = tool_in_process("eval_benchmarks.py", *args, "--only", "didemo")  # a changed setting: that row only
    assert third.stdout.count("zero-shot retrieval:") == 1 and "didemo: zero-shot retrieval:" in third.stdout
    rows3 = json.loads((out / "benchmarks.json").read_text())["rows"]
    assert [(x["name"], x["task"]) for x in rows3] == list(rows)  # the other rows kept, in the YAML's order
    assert [x for x in rows3 if x["name"] != "didemo"] == [x for x in doc["rows"] if x["name"] != "didemo"]
    assert [x["max_text_len"] for x in rows3 if x["name"] == "didemo"] == [20]
