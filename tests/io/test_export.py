import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from cleanpairs.errors import InputError
from cleanpairs.io.export import export_scores
from cleanpairs.io.scores import write_scores
from cleanpairs.schema import P_CLEAN, SIMILARITY, output_fields
from tests.conftest import run_metadata


@pytest.fixture
def scores_file(tmp_path):
    """Five pairs with real picture files (one PNG), three of them above 0.5."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    names = []
    for i in range(5):
        name = f"img{i}.png" if i == 0 else f"img{i}.jpg"
        Image.new("RGB", (32, 24), (50 * i, 0, 0)).save(folder / name)
        names.append(name)
    table = pa.table(
        {"key": [f"k{i}" for i in range(5)], "image": names, "caption": [f"caption {i}" for i in range(5)]}
    )
    columns = {f.name: pa.nulls(5, f.type) for f in output_fields(pa.string())}
    columns[P_CLEAN] = pa.array([0.9, 0.2, 0.7, 0.6, 0.1], pa.float32())
    columns[SIMILARITY] = pa.array([0.5] * 5, pa.float32())
    columns["cp_status"] = pa.array(["ok"] * 5)
    meta = run_metadata(
        5,
        {"key": "key", "image": "image", "caption": "caption"},
        input=[str(folder / "pairs.parquet")],
        estimated_noise_rate=0.4,
        extra={"image_base": str(folder)},
    )
    path = tmp_path / "scores.parquet"
    write_scores(table, columns, meta, path)
    return path


def test_parquet_export_shards_the_kept_rows(scores_file, tmp_path):
    counts = export_scores(scores_file, tmp_path / "out", format="parquet", thresh=0.5, shard_rows=2)
    assert (counts.rows, counts.shards) == (3, 2)
    shards = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert [pq.read_table(s).num_rows for s in shards] == [2, 1]
    keys = pa.concat_tables([pq.read_table(s) for s in shards]).column("key").to_pylist()
    assert keys == ["k0", "k2", "k3"]


def test_webdataset_export_reads_back_with_webdataset(scores_file, tmp_path):
    counts = export_scores(scores_file, tmp_path / "wds", format="webdataset", thresh=0.5, shard_rows=2)
    assert (counts.rows, counts.shards, counts.failed) == (3, 2, 0)
    out = tmp_path / "wds"
    assert sorted(p.name for p in out.iterdir()) == [
        "00000.parquet",
        "00000.tar",
        "00000_stats.json",
        "00001.parquet",
        "00001.tar",
        "00001_stats.json",
    ]
    urls = [str(out / "00000.tar"), str(out / "00001.tar")]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == ["000000000", "000000001", "000010000"]
    assert [s["txt"] for s in samples] == ["caption 0", "caption 2", "caption 3"]
    assert [s["json"]["source_key"] for s in samples] == ["k0", "k2", "k3"]
    assert all(isinstance(s["jpg"], Image.Image) and s["jpg"].size == (32, 24) for s in samples)
    assert np.allclose([s["json"][P_CLEAN] for s in samples], [0.9, 0.7, 0.6])
    assert json.loads((out / "00000_stats.json").read_text())["successes"] == 2
    assert pq.read_table(out / "00001.parquet").column("key").to_pylist() == ["000010000"]


def test_export_rejects_unknown_format_and_input_as_output(scores_file, tmp_path):
    with pytest.raises(InputError, match="--format must be one of parquet, webdataset"):
        export_scores(scores_file, tmp_path / "o", format="zip")
    with pytest.raises(InputError, match="would overwrite the input"):
        export_scores(scores_file, scores_file, format="parquet")
    assert not (tmp_path / "o").exists()
