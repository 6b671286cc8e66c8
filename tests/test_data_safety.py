"""Data safety through the installed command: an output never overwrites an input or deletes
what cleanpairs did not write, a bad output path is one line before any work, a killed run
leaves the target absent or as it was, and every row's picture is its own table's."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.errors import InputError
from cleanpairs.io.export import export_scores
from cleanpairs.io.models import MODEL_FORMAT, check_model_target
from cleanpairs.io.scores import filter_scores, write_scores
from cleanpairs.pipeline import score_corpus
from cleanpairs.retrieval import search, train_from_scores
from cleanpairs.schema import P_CLEAN, SIMILARITY, output_fields
from tests.conftest import flickr_slice, run_metadata

EXE = Path(sys.executable).with_name("cleanpairs")


def cleanpairs(*args: object, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, text=True, env={**os.environ, **env}, check=False
    )


def assert_refused(done: subprocess.CompletedProcess, *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(w in lines[0] for w in words), lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (hidden ones too) with the md5 of its bytes ('dir' for folders)."""
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def hand_scores(path: Path, table: pa.Table, image_folders: list[str] | None = None) -> Path:
    """``table`` written as a scores file, p_clean falling from 1 to 0 along the rows."""
    n = table.num_rows
    columns = {f.name: pa.nulls(n, f.type) for f in output_fields(pa.string())}
    columns[P_CLEAN] = pa.array([1 - i / max(n - 1, 1) for i in range(n)], pa.float32())
    columns[SIMILARITY] = pa.array([0.5] * n, pa.float32())
    columns["cp_status"] = pa.array(["ok"] * n)
    extra = {"image_folders": image_folders or [str(path.parent)], "source_rows": [n]}
    roles = {"key": "key", "image": "image", "caption": "caption"}
    write_scores(table, columns, run_metadata(n, roles, extra=extra), path)
    return path


@pytest.fixture
def work(tmp_path):
    """A folder with a corpus, a trusted table, a keys file and a scores file (2 photos)."""
    table = flickr_slice(2, offset=7)
    pq.write_table(table, tmp_path / "corpus.parquet")
    pq.write_table(flickr_slice(1, offset=9), tmp_path / "trusted.parquet")
    (tmp_path / "keys.txt").write_text("\n".join(table.column("key").to_pylist()[:3]) + "\n")
    hand_scores(tmp_path / "scores.parquet", table.select(["key", "image", "caption"]))
    return tmp_path


def test_export_into_a_folder_of_other_files_deletes_nothing(work):
    mine = work / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "important.txt").write_text("keep me")
    (mine / "sub" / "notes.txt").write_text("me too")
    before = snapshot(work)
    done = cleanpairs("export", work / "scores.parquet", "-o", mine)
    assert_refused(done, str(mine), "already holds files that no cleanpairs export wrote", "important.txt")
    assert snapshot(work) == before
    # An earlier export is replaced whole.
    for thresh in ("0.2", "0.9"):
        done = cleanpairs("export", work / "scores.parquet", "-o", work / "out", "--thresh", thresh)
        assert done.returncode == 0, done.stderr
    manifest = json.loads((work / "out" / "_cleanpairs.json").read_text())
    assert manifest["threshold"] == 0.9 and manifest["rows"] == pq.read_table(work / "out").num_rows


@pytest.mark.parametrize(
    ("args", "protected"),
    [
        (
            [
                "score",
                "corpus.parquet",
                "--method",
                "mscn",
                "--meta",
                "trusted.parquet",
                "-o",
                "trusted.parquet",
            ],
            "trusted.parquet",
        ),
        (
            ["score", "corpus.parquet", "--method", "mscn", "--meta-keys", "keys.txt", "-o", "keys.txt"],
            "keys.txt",
        ),
        (["filter", "scores.parquet", "-o", "scores.parquet"], "scores.parquet"),
        (
            ["filter", "scores.parquet", "-o", "kept.parquet", "--rejected", "scores.parquet"],
            "scores.parquet",
        ),
        (["export", "scores.parquet", "-o", "."], "scores.parquet"),
        (["train", "scores.parquet", "-o", "."], "scores.parquet"),
    ],
    ids=["score-meta", "score-meta-keys", "filter-o", "filter-rejected", "export", "train"],
)
def test_an_output_never_overwrites_an_input(work, args, protected):
    before = snapshot(work)
    done = subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=work, check=False)
    assert_refused(done, "would overwrite the input", protected)
    assert snapshot(work) == before


def test_filter_refuses_one_file_for_both_outputs(work):
    before = snapshot(work)
    done = cleanpairs(
        "filter", work / "scores.parquet", "-o", work / "x.parquet", "--rejected", work / "x.parquet"
    )
    assert_refused(done, "the kept and the rejected output must be different files")
    assert snapshot(work) == before


@pytest.mark.parametrize("command", ["filter", "export"])
def test_an_output_path_that_cannot_be_written_is_one_line(work, read_only_folder, command):
    (work / "afile").write_text("x")
    (work / "afolder").mkdir()
    before = snapshot(work)
    scores = work / "scores.parquet"
    cases = [
        (read_only_folder / "out", "read-only file system"),
        (work / "afile" / "out", "afile is a file, not a folder"),
        (work / "afolder" if command == "filter" else work / "afile", "it is a"),
    ]
    for output, problem in cases:
        assert_refused(cleanpairs(command, scores, "-o", output), f"cannot write {output}", problem)
    assert snapshot(work) == before


def test_score_and_train_check_their_output_before_any_work(work, read_only_folder):
    (work / "afile").write_text("x")
    cache = work / "cache"
    cache.mkdir()
    before = snapshot(work)
    done = cleanpairs(
        "score", work / "corpus.parquet", "-o", read_only_folder / "s.parquet", "--cache-dir", cache
    )
    assert_refused(done, f"cannot write {read_only_folder / 's.parquet'}", "read-only file system")
    done = cleanpairs("train", work / "scores.parquet", "-o", work / "afile" / "model", "--cache-dir", cache)
    assert_refused(done, "afile is a file, not a folder")
    assert snapshot(work) == before  # nothing encoded into the cache either


def test_export_killed_mid_way_leaves_the_previous_export_and_a_rerun_cleans_up(tmp_path):
    table = flickr_slice(20).select(["key", "image", "caption"])
    scores = hand_scores(tmp_path / "scores.parquet", table)
    export_scores(scores, tmp_path / "reference", format="webdataset", thresh=0.0, shard_rows=1)
    out = tmp_path / "out"
    export_scores(scores, out, format="webdataset", thresh=0.9, shard_rows=1)
    previous = snapshot(out)
    args = [
        str(EXE),
        "export",
        str(scores),
        "-o",
        str(out),
        "--format",
        "webdataset",
        "--thresh",
        "0",
        "--shard-rows",
        "1",
    ]
    run = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # Killed once the export has written some of its shards (into its temporary folder).
    while not list(tmp_path.glob(".out.cleanpairs-tmp-*/00002.tar")) and time.monotonic() < deadline:
        assert run.poll() is None, "the export ended before it could be killed"
        time.sleep(0.002)
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, "the export ended before it could be killed"
    [left] = tmp_path.glob(".out.cleanpairs-tmp-*")
    assert any(left.iterdir())
    assert snapshot(out) == previous
    rerun = subprocess.run(args, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    timing_free = {k: v for k, v in snapshot(out).items() if not k.endswith("_stats.json")}
    reference = {k: v for k, v in snapshot(tmp_path / "reference").items() if not k.endswith("_stats.json")}
    assert timing_free == reference and len(reference) == 2 * table.num_rows + 1


@pytest.fixture
def two_folders(tmp_path):
    """Folders a/ and b/, each with a pairs.parquet and images/0.jpg, images/1.jpg: the same
    relative names, different Flickr8k photos (two captions each)."""
    photos = flickr_slice(4, offset=20)
    for name, offset in (("a", 0), ("b", 2)):
        (tmp_path / name / "images").mkdir(parents=True)
        ids = list(dict.fromkeys(photos.column("image_id").to_pylist()))[offset : offset + 2]
        rows = {"key": [], "image": [], "caption": []}
        for i, image_id in enumerate(ids):
            picked = photos.filter(pa.compute.equal(photos.column("image_id"), image_id)).slice(0, 2)
            shutil.copy(picked.column("image")[0].as_py(), tmp_path / name / "images" / f"{i}.jpg")
            rows["key"] += [f"{name}{i}-{c}" for c in range(2)]
            rows["image"] += [f"images/{i}.jpg"] * 2
            rows["caption"] += picked.column("caption").to_pylist()
        pq.write_table(pa.table(rows), tmp_path / name / "pairs.parquet")
    return tmp_path


def own_picture(root: Path, key: str) -> Path:
    return root / key[0] / "images" / f"{key[1]}.jpg"


def test_a_glob_over_two_folders_reads_each_rows_own_pictures_everywhere(two_folders, cache_dir):
    root = two_folders
    scores = root / "scores.parquet"
    run = score_corpus(
        str(root / "*" / "pairs.parquet"),
        scores,
        method="similarity",
        cache_dir=cache_dir,
        device="cpu",
        progress=False,
    )
    assert run.meta.extra["source_rows"] == [4, 4]
    done = cleanpairs("export", scores, "-o", root / "wds", "--format", "webdataset", "--thresh", "0")
    assert done.returncode == 0, done.stderr
    exported = {}
    with tarfile.open(root / "wds" / "00000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for name, data in members.items():
        if name.endswith(".json"):
            exported[json.loads(data)["source_key"]] = members[name.replace(".json", ".jpg")]
    assert len(exported) == 8
    for key, jpg in exported.items():
        assert hashlib.md5(jpg).digest() == hashlib.md5(own_picture(root, key).read_bytes()).digest(), key
    # Training embeds the same pictures the scoring did: the corpus fingerprint hashes every
    # row's picture bytes.
    model = train_from_scores(
        scores, root / "model", thresh=0.0, epochs=1, cache_dir=cache_dir, device="cpu", progress=False
    )
    assert model.info["corpus_fingerprint"] == run.meta.input_fingerprint
    found = search(root / "model", None, text="a dog", k=8, cache_dir=cache_dir, device="cpu", progress=False)
    assert {hit.image for hit in found.hits} == {str(own_picture(root, k)) for k in exported}
    assert all(hit.image == str(own_picture(root, hit.key)) for hit in found.hits)


def test_filter_killed_at_a_random_moment_leaves_each_output_as_it_was(tmp_path):
    n = 400_000
    rng = np.random.default_rng(0)
    table = pa.table(
        {"key": pa.array(np.arange(n)), "image": pa.array(["x.jpg"] * n), "caption": pa.array(["c"] * n)}
    )
    scores = hand_scores(tmp_path / "scores.parquet", table)
    filter_scores(scores, tmp_path / "ref-kept.parquet", thresh=0.5, rejected=tmp_path / "ref-rest.parquet")
    kept, rest = tmp_path / "kept.parquet", tmp_path / "rest.parquet"
    filter_scores(scores, kept, thresh=0.9, rejected=rest)
    previous = {p: p.read_bytes() for p in (kept, rest)}
    args = [str(EXE), "filter", str(scores), "-o", str(kept), "--rejected", str(rest)]
    run = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".kept.parquet.cleanpairs-tmp-*")) and time.monotonic() < deadline:
        assert run.poll() is None, "the filter ended before it could be killed"
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.05))
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, "the filter ended before it could be killed"
    # Each output is whole: as it was, or (killed between the two renames) the new version.
    for path, reference in ((kept, tmp_path / "ref-kept.parquet"), (rest, tmp_path / "ref-rest.parquet")):
        assert path.read_bytes() in (previous[path], reference.read_bytes())
    rerun = subprocess.run(args, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert pq.read_table(kept).equals(pq.read_table(tmp_path / "ref-kept.parquet"))
    assert pq.read_table(rest).equals(pq.read_table(tmp_path / "ref-rest.parquet"))
    assert pq.read_schema(kept).metadata == pq.read_schema(tmp_path / "ref-kept.parquet").metadata


def test_a_model_folder_holding_other_files_is_not_replaced(tmp_path):
    model = tmp_path / "model"
    (model / "index").mkdir(parents=True)
    (model / "model.json").write_text(json.dumps({"format": MODEL_FORMAT}))
    check_model_target(model)  # a model and its indexes: replaced whole by the next one
    (model / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"model holds a model and other files \(notes\.txt\)"):
        check_model_target(model)
