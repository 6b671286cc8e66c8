import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.errors import InputError
from cleanpairs.io.scores import open_scores
from cleanpairs.metrics import detection_metrics
from cleanpairs.pipeline import default_output, score_corpus, summarize_scores
from cleanpairs.schema import OUTPUT_COLUMNS
from tests.conftest import flickr_slice

TRAIN = {"batch_size": 64}
BASELINE = "similarity"  # these tests check the baseline's own outputs, not the default method's


@pytest.fixture(scope="module")
def scored(noisy_flickr, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored") / "scores.parquet"
    return score_corpus(
        noisy_flickr, out, method=BASELINE, params=TRAIN, cache_dir=cache_dir, device="cpu", progress=False
    )


def test_every_input_row_comes_back_untouched_with_cp_columns(noisy_flickr, scored):
    source = pq.read_table(noisy_flickr)
    out = pq.read_table(scored.output)
    assert out.num_rows == source.num_rows == 300
    assert out.column_names == source.column_names + list(OUTPUT_COLUMNS)
    assert out.select(source.column_names).equals(source)
    assert out.column("cp_status").to_pylist() == ["ok"] * 300
    assert out.column("cp_rematch_key").null_count == 300
    assert out.schema.field("cp_rematch_key").type == source.schema.field("key").type
    p = out.column("cp_p_clean").to_numpy()
    assert np.all((p >= 0) & (p <= 1))
    assert np.array_equal(p, out.column("cp_soft_label").to_numpy())


def test_run_metadata_is_recorded(scored):
    meta = open_scores(scored.output)[1]
    assert meta.method == "similarity" and meta.encoder == "offline" and meta.seed == 0
    # batch_size was given; epochs is the default, recorded too
    assert meta.params["batch_size"] == 64 and meta.params["epochs"] == 2
    assert meta.rows == meta.scored_rows == 300
    assert 0.0 < meta.estimated_noise_rate < 1.0
    assert len(meta.input_fingerprint) == 40 and {"embed_s", "fit_s", "total_s"} <= set(meta.timings)


def test_the_baseline_detects_shuffled_captions_on_real_photos(scored):
    summary = summarize_scores(scored.output, truth_col="is_clean")
    assert summary.detection["true_noise_rate"] == pytest.approx(0.3, abs=0.01)
    assert summary.detection["auroc"] > 0.65  # chance is 0.5; 60 photos are little to learn from
    assert sum(summary.histogram) == 300


def test_a_second_run_encodes_nothing_and_repeats_the_output(noisy_flickr, cache_dir, scored, tmp_path):
    again = score_corpus(
        noisy_flickr,
        tmp_path / "again.parquet",
        method=BASELINE,
        params=TRAIN,
        cache_dir=cache_dir,
        device="cpu",
        progress=False,
    )
    assert again.encoded == {"images": 0, "texts": 0}
    first, second = pq.read_table(scored.output), pq.read_table(again.output)
    for name in ("cp_p_clean", "cp_similarity"):
        assert first.column(name).equals(second.column(name))


def test_unscorable_rows_stay_with_a_reason(tmp_path, cache_dir):
    table = flickr_slice(8, offset=300).to_pylist()
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    table[0]["image"] = str(tmp_path / "missing.jpg")
    table[1]["image"] = str(tmp_path / "broken.jpg")
    table[2]["caption"] = "   "
    pq.write_table(pa.Table.from_pylist(table), tmp_path / "pairs.parquet")
    run = score_corpus(
        tmp_path / "pairs.parquet",
        params={"ncr_epochs": 2, "crcl_stages": "1"},  # the default method, robust, made quick
        cache_dir=cache_dir,
        device="cpu",
        progress=False,
    )
    out = pq.read_table(run.output)
    status = out.column("cp_status").to_pylist()
    assert status[0].startswith("image file not found") and status[1].startswith("image cannot be decoded")
    assert status[2] == "empty caption" and set(status[3:]) == {"ok"}
    assert out.column("cp_p_clean").null_count == 3 and out.num_rows == 40
    assert run.meta.scored_rows == 37


def test_default_output_sits_beside_the_input(tmp_path):
    assert default_output(tmp_path / "data.parquet") == tmp_path / "data.scores.parquet"
    assert default_output(tmp_path / "data.csv") == tmp_path / "data.scores.parquet"
    (tmp_path / "shards").mkdir()
    assert default_output(tmp_path / "shards") == tmp_path / "shards.scores.parquet"


def test_the_input_is_never_overwritten(noisy_flickr, cache_dir):
    before = noisy_flickr.read_bytes()
    with pytest.raises(InputError, match="would overwrite the input"):
        score_corpus(noisy_flickr, noisy_flickr, cache_dir=cache_dir, progress=False)
    assert noisy_flickr.read_bytes() == before


def test_bad_method_parameter_fails_before_any_work(noisy_flickr, tmp_path):
    from cleanpairs.errors import ParameterError

    with pytest.raises(ParameterError, match="'ncr_epochs' parameter"):
        score_corpus(noisy_flickr, tmp_path / "o.parquet", params={"ncr_epochs": "-1"}, progress=False)
    assert not (tmp_path / "o.parquet").exists()


def test_precomputed_embeddings_are_scored_as_given(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 16)).astype(np.float32)
    image_index = np.repeat(np.arange(40), 2)
    texts = images[image_index] + 0.1 * rng.normal(size=(80, 16)).astype(np.float32)
    noisy = np.arange(80) % 5 == 0
    texts[noisy] = rng.normal(size=(noisy.sum(), 16))
    table = pa.table(
        {
            "key": np.arange(80),
            "image_emb": pa.array(list(images[image_index]), pa.list_(pa.float32())),
            "text_emb": pa.array(list(texts), pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "emb.parquet")
    run = score_corpus(tmp_path / "emb.parquet", encoder="precomputed", progress=False)
    p = pq.read_table(run.output).column("cp_p_clean").to_numpy()
    assert detection_metrics(p, ~noisy)["auroc"] > 0.95


def test_a_run_that_would_keep_almost_nothing_says_so_in_one_line():
    from cleanpairs.pipeline import low_keep_warning

    line = low_keep_warning(4, 100, "mscn")
    assert line == (
        "mscn would keep only 4 of 100 scored pairs at cp_p_clean >= 0.5 (4.0%); look at "
        "`cleanpairs info` before filtering, or try another method"
    )
    assert low_keep_warning(5, 100, "mscn") is None and low_keep_warning(0, 0, "ncr") is None


def test_a_corpus_carrying_a_clip_score_is_split_with_no_encoder(tmp_path):
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    clean = rng.random(200) < 0.7
    score = np.where(clean, rng.normal(0.32, 0.03, 200), rng.normal(0.12, 0.03, 200))
    score[5] = np.nan
    table = pa.table({"SAMPLE_ID": np.arange(200), "URL": [f"http://x/{i}.jpg" for i in range(200)],
                      "TEXT": [f"t{i}" for i in range(200)], "similarity": score})  # fmt: skip
    pq.write_table(table, tmp_path / "laion.parquet")
    exe = Path(sys.executable).parent / "cleanpairs"
    done = subprocess.run([str(exe), "score", tmp_path / "laion.parquet", "--method", "similarity",
                           "--similarity-col", "similarity", "-o", tmp_path / "s.parquet"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = pq.read_table(tmp_path / "s.parquet")
    status = out.column("cp_status").to_pylist()
    assert status[5] == "no value in similarity" and status.count("ok") == 199
    p = out.column("cp_p_clean").to_numpy(zero_copy_only=False)
    keep = np.isfinite(p)
    assert ((p[keep] >= 0.5) == clean[keep]).mean() > 0.97
    assert json.loads(out.schema.metadata[b"cleanpairs"])["encoder"] == "column:similarity"
    wrong = subprocess.run([str(exe), "score", tmp_path / "laion.parquet", "--method", "ncr",
                            "--similarity-col", "similarity", "-o", tmp_path / "n.parquet"],
                           capture_output=True, text=True)  # fmt: skip
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: --similarity-col")
