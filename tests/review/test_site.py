"""The review site a scores file gives: its files, the pairs the page holds, escaping, refusals."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cleanpairs.errors import CleanpairsError, InputError
from cleanpairs.io.scores import write_scores
from cleanpairs.review import build_review
from cleanpairs.review.site import safe_json
from tests.conftest import run_metadata
from tests.review.conftest import ATTRIBUTE_CAPTION, MISSING_ROW, ROWS, SCRIPT_CAPTION, write_review_scores


def page_data(index: Path) -> dict:
    html = index.read_text()
    found = re.search(r'<script type="application/json" id="cp-data">(.*?)</script>', html, re.S)
    assert found is not None
    return json.loads(found.group(1))


def section(data: dict, name: str) -> list[dict]:
    part = next(s for s in data["sections"] if s["id"] == name)
    return [data["pairs"][i] for i in part["rows"]]


def test_the_page_holds_the_worst_borderline_sampled_and_unscored_pairs(review_scores, tmp_path):
    out = tmp_path / "review"
    result = build_review(review_scores, out, truth="is_clean", thresh=0.5, worst=5, borderline=4, sample=3)
    assert result.index == out / "index.html"
    assert (result.worst, result.borderline, result.sample, result.unscored) == (5, 4, 3, 1)
    data = page_data(result.index)
    assert [p["key"] for p in section(data, "worst")] == ["k000", "k001", "k002", "k004", "k005"]
    assert [p["key"] for p in section(data, "borderline")] == ["k018", "k019", "k020", "k021"]
    sample = section(data, "sample")
    assert len(sample) == 3 and all(p["p_clean"] >= 0.5 for p in sample)
    assert [p["key"] for p in section(data, "unscored")] == [f"k{MISSING_ROW:03d}"]
    run = data["run"]
    assert (run["rows"], run["scored"], run["not_scored"]) == (ROWS, ROWS - 1, [["image file not found", 1]])
    assert run["kept_at"] == [[0.3, 28], [0.5, 20], [0.7, 12]]
    assert run["method"] == "similarity" and 0 <= run["detection"]["auroc"] <= 1


def test_each_pair_has_a_small_thumbnail_or_says_why_not(review_scores, tmp_path):
    out = tmp_path / "review"
    build_review(review_scores, out, worst=10, borderline=0, sample=0)
    pairs = page_data(out / "index.html")["pairs"]
    missing = next(p for p in pairs if p["key"] == f"k{MISSING_ROW:03d}")
    assert missing["thumb"] is None and "image file not found" in missing["problem"]
    assert missing["status"] == "image file not found"
    thumbs = [p["thumb"] for p in pairs if p["thumb"]]
    assert len(thumbs) == len(pairs) - 1
    for thumb in thumbs:
        with Image.open(out / thumb) as img:
            assert img.format == "JPEG" and max(img.size) <= 240
    # The page links its thumbnails only, never the full-size photos.
    assert all("image" not in p for p in pairs) and "flickr8k" not in (out / "index.html").read_text()


def test_rematch_proposals_carry_the_partners_caption(review_scores, tmp_path):
    out = tmp_path / "review"
    build_review(review_scores, out, worst=5, borderline=0, sample=0)
    pair = next(p for p in page_data(out / "index.html")["pairs"] if p["key"] == "k002")
    assert (pair["rematch_key"], pair["rematch_caption"]) == (f"k{ROWS - 1:03d}", f"caption {ROWS - 1}")
    assert pair["rematch_score"] == pytest.approx(0.8)


def test_corpus_text_cannot_close_the_data_element(review_scores, tmp_path):
    out = tmp_path / "review"
    build_review(review_scores, out, worst=3, borderline=0, sample=0)
    html = (out / "index.html").read_text()
    assert SCRIPT_CAPTION not in html and ATTRIBUTE_CAPTION not in html and "</script>alert" not in html
    assert html.count("</script>") == 2  # the data element's and the page script's own
    captions = [p["caption"] for p in page_data(out / "index.html")["pairs"]]
    assert SCRIPT_CAPTION in captions and ATTRIBUTE_CAPTION in captions
    assert (
        safe_json({"a": "</script><!-- & \u2028"})
        == '{"a":"\\u003c/script\\u003e\\u003c!-- \\u0026 \\u2028"}'
    )


def test_a_folder_of_shards_reads_as_one_table(tmp_path):
    first = write_review_scores(tmp_path / "a", rows=20)
    second = write_review_scores(tmp_path / "b", rows=20)
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copy(first, shards / "part-0.parquet")
    table = pq.read_table(second)
    keys = [f"z{k}" for k in table.column("key").to_pylist()]
    table = table.set_column(0, "key", pa.array(keys))
    pq.write_table(table, shards / "part-1.parquet")
    build_review(shards, tmp_path / "review", worst=4, borderline=0, sample=0)
    data = page_data(tmp_path / "review" / "index.html")
    assert data["run"]["rows"] == 40 and data["run"]["shards"] == 2
    assert [p["key"] for p in section(data, "worst")] == ["k000", "zk000", "k001", "zk001"]


def test_a_review_replaces_an_earlier_review_but_no_other_folder(review_scores, tmp_path):
    out = tmp_path / "review"
    build_review(review_scores, out, worst=3, borderline=0, sample=0)
    build_review(review_scores, out, worst=6, borderline=0, sample=0)
    assert len(list((out / "thumbs").iterdir())) == 6  # the 6 worst; the unscored row has no image
    manifest = json.loads((out / "_cleanpairs.json").read_text())
    assert manifest["format"] == "cleanpairs-review" and manifest["settings"]["worst"] == 6
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(
        InputError, match=r"mine already holds files that no cleanpairs review wrote \(notes\.txt\)"
    ):
        build_review(review_scores, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thresh": 1.5}, r"--thresh must be within \[0, 1\]; got 1.5"),
        ({"worst": -1}, r"--worst must be an integer within \[0, 2000\]; got -1"),
        ({"sample": 5000}, r"--sample must be an integer within \[0, 2000\]; got 5000"),
        ({"truth": "nope"}, r"no column 'nope' in .*scores.parquet; columns present: key, image"),
        ({"truth": "caption"}, r"--truth column 'caption' must be boolean .* holds string"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_written(review_scores, tmp_path, kwargs, message):
    with pytest.raises(CleanpairsError, match=message):
        build_review(review_scores, tmp_path / "review", **kwargs)
    assert not (tmp_path / "review").exists()


def test_images_stored_as_bytes_get_thumbnails_too(tmp_path):
    def png(colour: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (640, 320), colour).save(buf, format="PNG")
        return buf.getvalue()

    table = pa.table(
        {"id": [7, 8, 9], "image": [png("red"), b"not an image", png("blue")], "text": list("abc")}
    )
    p = pa.array(np.array([0.1, 0.2, 0.9], np.float32))
    columns = {
        "cp_p_clean": p,
        "cp_soft_label": p,
        "cp_similarity": p,
        "cp_rematch_key": pa.array([9, None, None], pa.int64()),
        "cp_rematch_score": pa.array([0.5, None, None], pa.float32()),
        "cp_status": pa.array(["ok"] * 3),
    }
    meta = run_metadata(3, {"key": "id", "image": "image", "caption": "text"})
    write_scores(table, columns, meta, tmp_path / "s.parquet")
    result = build_review(tmp_path / "s.parquet", tmp_path / "review")
    assert (result.thumbnails, result.unreadable) == (2, 1)
    worst = section(page_data(result.index), "worst")
    assert [(p["key"], p["caption"], p["rematch_caption"]) for p in worst] == [
        ("7", "a", "c"),
        ("8", "b", None),
        ("9", "c", None),
    ]
    assert "cannot be decoded" in worst[1]["problem"]
    with Image.open(tmp_path / "review" / worst[0]["thumb"]) as thumb:
        assert thumb.size == (240, 120)
