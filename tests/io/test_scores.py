import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.errors import InputError
from cleanpairs.io import scores as scores_io
from cleanpairs.io.scores import filter_scores, open_scores, write_scores
from cleanpairs.schema import P_CLEAN, output_fields
from tests.conftest import run_metadata


def make_scores_file(path, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random(n).astype(np.float32)
    p[::97] = np.nan
    table = pa.table({"key": [f"k{i}" for i in range(n)], "caption": ["c"] * n})
    columns = {f.name: pa.nulls(n, f.type) for f in output_fields(pa.string())}
    columns[P_CLEAN] = pa.array(p, from_pandas=True)
    columns["cp_status"] = pa.array(["ok"] * n)
    meta = run_metadata(n, {"key": "key"})
    write_scores(table, columns, meta, path)
    return p


def test_filter_splits_rows_by_threshold_and_keeps_metadata(tmp_path):
    p = make_scores_file(tmp_path / "s.parquet")
    counts = filter_scores(
        tmp_path / "s.parquet", tmp_path / "kept.parquet", thresh=0.3, rejected=tmp_path / "rej.parquet"
    )
    kept = pq.read_table(tmp_path / "kept.parquet")
    rejected = pq.read_table(tmp_path / "rej.parquet")
    expected = int(np.sum(p >= 0.3))
    assert counts.kept == kept.num_rows == expected
    assert counts.rejected == rejected.num_rows == len(p) - expected
    assert min(kept.column(P_CLEAN).to_pylist()) >= 0.3
    assert rejected.column(P_CLEAN).null_count == int(np.isnan(p).sum())
    meta = open_scores(tmp_path / "kept.parquet")[1]
    assert meta.method == "similarity" and meta.extra["filter"] == {"thresh": 0.3, "side": "kept"}


def test_filter_refuses_its_input_as_output(tmp_path):
    make_scores_file(tmp_path / "s.parquet")
    with pytest.raises(InputError, match="would overwrite the input"):
        filter_scores(tmp_path / "s.parquet", tmp_path / "s.parquet", thresh=0.5)


def test_filter_refuses_a_file_that_is_not_a_scores_file(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(InputError, match="not a scores file"):
        filter_scores(tmp_path / "plain.parquet", tmp_path / "o.parquet", thresh=0.5)


def test_a_filter_killed_half_way_leaves_no_file(tmp_path, monkeypatch):
    make_scores_file(tmp_path / "s.parquet", n=200_000)

    def dying(handle, columns=None):
        for i, batch in enumerate(handle.iter_batches(batch_size=50_000)):
            if i == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(scores_io, "iter_batches", dying)
    with pytest.raises(KeyboardInterrupt):
        filter_scores(
            tmp_path / "s.parquet", tmp_path / "kept.parquet", thresh=0.5, rejected=tmp_path / "rej.parquet"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]


def test_a_scores_file_with_damaged_metadata_is_refused_naming_it(tmp_path):
    make_scores_file(tmp_path / "s.parquet", n=5)
    table = pq.read_table(tmp_path / "s.parquet")
    damaged = table.replace_schema_metadata({b"cleanpairs": b'{"rows": 5'})
    pq.write_table(damaged, tmp_path / "damaged.parquet")
    with pytest.raises(
        InputError, match=r"damaged\.parquet is not a scores file: its 'cleanpairs' metadata is not"
    ):
        scores_io.read_run_metadata(tmp_path / "damaged.parquet")
    pq.write_table(table.drop_columns(["cp_status"]), tmp_path / "partial.parquet")
    with pytest.raises(
        InputError, match=r"partial\.parquet is not a scores file: it lacks the columns cp_status"
    ):
        open_scores(tmp_path / "partial.parquet")


def test_a_folder_or_a_file_that_is_not_parquet_is_refused_in_one_line(tmp_path):
    (tmp_path / "pairs.csv").write_text("image,caption\na.jpg,a dog\n")
    with pytest.raises(InputError) as refused:
        open_scores(tmp_path / "pairs.csv")
    assert str(refused.value).startswith(f"cannot read {tmp_path / 'pairs.csv'} as parquet: ")
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match="is a folder; give the scores file"):
        open_scores(tmp_path)
