"""Same input, same seed, same output: every registered method writes byte-identical ``cp_*``
columns (and a byte-identical parquet file but for the run's timings) when it scores a corpus
again on the CPU, in the same process or in a fresh one with another hash seed; another seed
gives other scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.methods import available_methods
from cleanpairs.noise import shuffle_captions
from cleanpairs.schema import METADATA_KEY, OUTPUT_COLUMNS, P_CLEAN

REPO = Path(__file__).resolve().parents[1]
METHODS = available_methods()
# A few epochs in batches of 64: several shuffled batches per epoch, and every stage of each
# method (warm-up, split, robust training, noisy pairs, rematching) runs at least once.
PARAMS: dict[str, dict[str, str]] = {
    "similarity": {"epochs": "2"},
    "crcl": {"stages": "1,1", "warmup_epochs": "1"},
    "ncr": {"warmup_epochs": "1", "epochs": "2", "noisy_from": "0.5"},
    "mscn": {"warmup_epochs": "1", "epochs": "2", "meta_warmup_steps": "20"},
    "robust": {"ncr_epochs": "2", "crcl_stages": "1,1"},
}
DEFAULT_PARAMS = {"warmup_epochs": "1", "epochs": "2"}
TRUSTED_PAIRS = 40
"""Clean corpus rows named as the trusted set of the methods that learn from one (mscn)."""


def params_of(method: str) -> dict[str, str]:
    return {"batch_size": "64", "dim": "64", **PARAMS.get(method, DEFAULT_PARAMS)}


def write_corpus(folder: Path) -> Path:
    """200 pairs (40 images x 5 captions) with precomputed embeddings, 30% of captions shuffled.

    Image and caption vectors live in separate spaces linked by a fixed linear map, as the
    offline encoder's do, so every method trains its heads.
    """
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 32)).astype(np.float32)
    link = rng.normal(size=(32, 24)).astype(np.float32)
    image_id = np.repeat(np.arange(40), 5)
    texts = (images[image_id] @ link + 0.3 * rng.normal(size=(200, 24))).astype(np.float32)
    noise = shuffle_captions(image_id, 0.3, seed=0)
    table = pa.table(
        {
            "key": [f"p{i:03d}" for i in range(200)],
            "image_id": image_id,
            "image_emb": pa.array(list(images[image_id]), pa.list_(pa.float32())),
            "text_emb": pa.array(list(texts[noise.caption_source]), pa.list_(pa.float32())),
            "is_clean": noise.is_clean,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "pairs.parquet")
    return folder / "pairs.parquet"


def trusted_keys(corpus: Path) -> list[str]:
    table = pq.read_table(corpus, columns=["key", "is_clean"])
    keys = [k for k, clean in zip(*table.to_pydict().values(), strict=True) if clean]
    return keys[:TRUSTED_PAIRS]


def score(corpus: Path, output: Path, method: str, seed: int = 0) -> Path:
    """Score ``corpus`` with ``method`` on the CPU, rematching too, as ``cleanpairs score`` does."""
    from cleanpairs.pipeline import score_corpus

    needs_trusted = method == "mscn"
    score_corpus(
        corpus,
        output,
        method=method,
        encoder="precomputed",
        params=params_of(method),
        seed=seed,
        device="cpu",
        progress=False,
        rematch=True,
        meta_keys=trusted_keys(corpus) if needs_trusted else None,
    )
    return output


def score_every_method(corpus: str, folder: str) -> None:
    """The fresh process: score the corpus with every method into ``folder``."""
    for method in METHODS:
        score(Path(corpus), Path(folder) / f"{method}.parquet", method)


def cp_column_bytes(path: Path) -> dict[str, bytes]:
    """Each ``cp_*`` column as Arrow IPC bytes: equal bytes, equal values, NaNs and nulls included."""
    table = pq.read_table(path, columns=list(OUTPUT_COLUMNS)).replace_schema_metadata(None)
    out = {}
    for name in OUTPUT_COLUMNS:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.select([name]).schema) as writer:
            writer.write_table(table.select([name]))
        out[name] = sink.getvalue().to_pybytes()
    return out


def data_pages(path: Path) -> bytes:
    """A parquet file up to its footer: the column chunks, everything but the metadata."""
    data = path.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little")
    return data[: len(data) - 8 - footer]


def footer_without_its_size(path: Path) -> dict:
    """The parquet footer's row groups, offsets and statistics; its size follows the timings."""
    footer = pq.ParquetFile(path).metadata.to_dict()
    footer.pop("serialized_size")
    return footer


def run_metadata_without_timings(path: Path) -> dict:
    meta = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    meta.pop("timings")
    return meta


def assert_same_output(a: Path, b: Path) -> None:
    first, second = cp_column_bytes(a), cp_column_bytes(b)
    differ = [name for name in OUTPUT_COLUMNS if first[name] != second[name]]
    assert not differ, f"{a.name} and {b.name} differ in {differ}"
    assert data_pages(a) == data_pages(b)
    # The footer: row groups, offsets, statistics; then the run metadata, where only the
    # timings may differ (they sit in the cleanpairs key and in its copy in ARROW:schema).
    assert footer_without_its_size(a) == footer_without_its_size(b)
    assert run_metadata_without_timings(a) == run_metadata_without_timings(b)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("determinism"))


@pytest.fixture(scope="module")
def first_runs(corpus) -> dict[str, Path]:
    """Every method's output, made once in this process."""
    return {m: score(corpus, corpus.with_name(f"{m}.first.parquet"), m) for m in METHODS}


@pytest.fixture(scope="module")
def fresh_process_runs(corpus, tmp_path_factory) -> Path:
    """Every method's output, made in a fresh interpreter whose hash seed differs from ours:
    set or dict order that hangs on string hashes would show as other bytes."""
    folder = tmp_path_factory.mktemp("fresh-process")
    ours = os.environ.get("PYTHONHASHSEED", "random")
    theirs = "1" if ours != "1" else "2"
    worker = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.test_determinism import score_every_method; "
         "score_every_method(*sys.argv[1:])", str(corpus), str(folder)],
        cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": theirs},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]
    return folder


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_bytes_in_one_process(method, corpus, first_runs):
    again = score(corpus, corpus.with_name(f"{method}.again.parquet"), method)
    assert_same_output(first_runs[method], again)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_bytes_in_a_fresh_process(method, first_runs, fresh_process_runs):
    assert_same_output(first_runs[method], fresh_process_runs / f"{method}.parquet")


@pytest.mark.parametrize("method", METHODS)
def test_another_seed_gives_other_scores(method, corpus, first_runs):
    other = score(corpus, corpus.with_name(f"{method}.seed1.parquet"), method, seed=1)
    assert cp_column_bytes(other)[P_CLEAN] != cp_column_bytes(first_runs[method])[P_CLEAN]


def test_the_comparison_sees_one_changed_score(corpus, first_runs, tmp_path):
    table = pq.read_table(first_runs["similarity"])
    p_clean = table.column(P_CLEAN).to_numpy(zero_copy_only=False).copy()
    p_clean[17] = np.nextafter(p_clean[17], np.float32(2))
    changed = table.set_column(table.schema.get_field_index(P_CLEAN), P_CLEAN, pa.array(p_clean))
    pq.write_table(changed, tmp_path / "changed.parquet")
    with pytest.raises(AssertionError, match=r"differ in \['cp_p_clean'\]"):
        assert_same_output(first_runs["similarity"], tmp_path / "changed.parquet")
