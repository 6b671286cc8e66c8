"""Damaged inputs: random, truncated and bit-flipped tables, scores files, tars and images give a
value or one clean ``CleanpairsError`` (an ``ImageProblem`` for an image), never another
exception, a crash or a hang; through the installed CLI, exit 2 with one ``error:`` line, or
exit 0 with every row kept and a ``cp_status`` for each damaged image.

The fuzz loop is seeded, not random per run: a failure names a case that can be made again with
``python -c "from tests.test_fuzz import main; main(['KIND', '/tmp/fuzz', 'N', 'SEED'])"``.
"""

from __future__ import annotations

import faulthandler
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cleanpairs.errors import CleanpairsError, InputError
from cleanpairs.io.images import ImageProblem, decode_image, read_image_bytes
from cleanpairs.io.scores import filter_scores, iter_batches, open_scores, write_scores
from cleanpairs.io.tables import read_pairs, read_table_file
from cleanpairs.schema import METADATA_KEY, P_CLEAN, STATUS_OK, RunMetadata

REPO = Path(__file__).resolve().parents[1]
FLICKR = REPO.parent / "shared" / "data" / "flickr8k"
"""``tests.conftest.FLICKR``, named again: conftest imports torch, which the fuzz workers can
do without (it would add seconds to each one's start)."""
CLEANPAIRS = Path(sys.executable).with_name("cleanpairs")
CASES = 200
"""Damaged files per kind."""
CASE_TIMEOUT_S = 10
"""One damaged file must be answered within this; the watchdog ends the worker otherwise."""
KINDS = ("parquet", "csv", "jsonl", "tar", "scores", "model", "jpeg", "png", "gif", "image_refs")
CLEAN_ERRORS = (CleanpairsError, ImageProblem)
WORKER = "import sys; from tests.test_fuzz import main; main(sys.argv[1:])"


# --- intact files the damage starts from ---------------------------------------------------------


def _photo(name: str, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A real Flickr8k photo, shrunk so that a thousand decodes stay fast."""
    with Image.open(FLICKR / "images" / name) as img:
        return img.convert("RGB").resize(size)


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    (img.convert("P") if fmt == "GIF" else img).save(buf, format=fmt)
    return buf.getvalue()


def _photo_names(n: int) -> list[str]:
    paths = pq.read_table(FLICKR / "dev.parquet", columns=["image"]).column("image").to_pylist()
    return [Path(p).name for p in dict.fromkeys(paths)][:n]


def _vectors(rows: int, seed: int) -> pa.Array:
    matrix = np.random.default_rng(seed).normal(size=(rows, 8)).astype(np.float32)
    return pa.array(list(matrix), pa.list_(pa.float32()))


def _pairs_table(rows: int = 24, *, embeddings: bool = True) -> pa.Table:
    columns: dict[str, object] = {
        "key": [f"k{i:03d}" for i in range(rows)],
        "image": [f"images/{i // 3}.jpg" for i in range(rows)],
        "caption": [f"a dog runs on the grass number {i}" for i in range(rows)],
        "image_id": [i // 3 for i in range(rows)],
    }
    if embeddings:
        columns["image_emb"] = _vectors(rows, 0)
        columns["text_emb"] = _vectors(rows, 1)
    return pa.table(columns)


def _parquet_bytes(table: pa.Table, **options: object) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()


def _write_scores_file(path: Path) -> Path:
    """A scores file written by the real writer, with one row not scored."""
    table = _pairs_table(16, embeddings=False)
    n = table.num_rows
    p = np.linspace(0, 1, n, dtype=np.float32)
    p[3] = np.nan
    columns = {
        "cp_p_clean": pa.array(p, from_pandas=True),
        "cp_soft_label": pa.array(p, from_pandas=True),
        "cp_similarity": pa.array(p - 0.5, from_pandas=True),
        "cp_rematch_key": pa.array([None if i % 4 else f"k{i:03d}" for i in range(n)], pa.string()),
        "cp_rematch_score": pa.array([None if i % 4 else 0.5 for i in range(n)], pa.float32()),
        "cp_status": pa.array(["image cannot be decoded" if i == 3 else STATUS_OK for i in range(n)]),
    }
    # tests.conftest.run_metadata would do, but conftest imports torch, which the workers avoid.
    meta = RunMetadata(
        version="0",
        method="similarity",
        params={},
        encoder="offline",
        seed=0,
        input=["pairs.parquet"],
        input_fingerprint="f",
        roles={"key": "key", "image": "image", "caption": "caption"},
        rows=n,
        scored_rows=n - 1,
        estimated_noise_rate=0.5,
    )
    write_scores(table, columns, meta, path)
    return path


def _write_model(folder: Path) -> Path:
    """A retrieval model folder as ``cleanpairs train`` saves it: small linear heads."""
    import torch

    from cleanpairs.core.heads import ProjectionHead, TorchHeads
    from cleanpairs.io.models import save_model

    torch.manual_seed(0)
    heads = TorchHeads(ProjectionHead(8, 4, 0), ProjectionHead(6, 4, 0), torch.device("cpu"))
    return save_model(folder, heads, "offline", {})


def _tar_bytes(jpeg: bytes) -> bytes:
    """A webdataset shard: ``{key}.jpg`` and ``{key}.txt`` members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(3):
            for suffix, payload in ((".jpg", jpeg), (".txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(f"{i:05d}{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def intact_files(kind: str, folder: Path) -> list[bytes]:
    """The intact bytes of one kind of file, in one or two variants."""
    if kind in ("jpeg", "png", "gif", "tar"):
        photos = [_photo(name) for name in _photo_names(2)]
        if kind == "tar":
            return [_tar_bytes(_encoded(photos[0], "JPEG"))]
        return [_encoded(img, kind.upper()) for img in photos]
    if kind == "parquet":
        table = _pairs_table()
        return [_parquet_bytes(table), _parquet_bytes(table, compression="none", use_dictionary=False)]
    if kind == "csv":
        buf = io.BytesIO()
        pcsv.write_csv(_pairs_table(embeddings=False), buf)
        return [buf.getvalue()]
    if kind == "jsonl":
        return ["\n".join(json.dumps(row) for row in _pairs_table().to_pylist()).encode()]
    if kind == "scores":
        return [_write_scores_file(folder / "intact.scores.parquet").read_bytes()]
    if kind == "model":
        return [(_write_model(folder / "model") / "image_head.pt").read_bytes()]
    raise ValueError(f"no intact file of kind {kind!r}")


# --- damage -------------------------------------------------------------------------------------


def _random(data: bytes, rng: np.random.Generator) -> bytes:
    return rng.bytes(int(rng.integers(0, 2 * len(data) + 1)))


def _truncated(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def _bit_flipped(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 17))):
        # Half the flips land in the last quarter, where parquet keeps its footer and schema.
        low = len(out) * 3 // 4 if rng.random() < 0.5 else 0
        pos = int(rng.integers(low, len(out)))
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def _overwritten(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    start = int(rng.integers(0, len(out)))
    length = int(rng.integers(1, 65))
    out[start : start + length] = rng.bytes(length) if rng.random() < 0.5 else bytes(length)
    return bytes(out[: len(data)])


DAMAGE: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "random": _random,
    "truncated": _truncated,
    "bit-flipped": _bit_flipped,
    "overwritten": _overwritten,
}


def damaged_cases(intact: list[bytes], n: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """``n`` damaged copies of the intact files as (description, bytes); the same for a seed."""
    rng = np.random.default_rng(seed)
    names = list(DAMAGE)
    for case in range(n):
        damage = names[case % len(names)]
        variant = case // len(names) % len(intact)
        yield f"case {case} ({damage}, variant {variant})", DAMAGE[damage](intact[variant], rng)


# --- what each kind of file is given to ---------------------------------------------------------


def _read_corpus(path: Path) -> None:
    """What ``score`` does with a table before a method runs: read, check, list, embed."""
    from cleanpairs.encoders import embed_corpus

    read_table_file(path)
    corpus = read_pairs(path)
    corpus.keys()
    corpus.captions()
    corpus.image_refs()
    if corpus.roles.image_emb is not None and corpus.roles.text_emb is not None:
        embed_corpus(corpus, "precomputed", progress=False)


def _read_scores(path: Path) -> None:
    """What ``info``, ``filter`` and ``export`` do with a scores file: open it and stream it."""
    handle, _ = open_scores(path)
    for batch in iter_batches(handle):
        batch.to_pylist()
    kept, rejected = path.with_name("kept.parquet"), path.with_name("rejected.parquet")
    filter_scores(path, kept, thresh=0.5, rejected=rejected)


def _read_model(path: Path) -> None:
    """What ``search`` does first: load the model folder whose image head is ``path``."""
    from cleanpairs.io.models import load_model

    load_model(path.parent, device="cpu")


def _read_image(path: Path) -> None:
    decode_image(read_image_bytes(str(path)))


SUFFIX = {
    "parquet": ".parquet",
    "csv": ".csv",
    "jsonl": ".jsonl",
    "tar": ".tar",
    "scores": ".parquet",
    "jpeg": ".jpg",
    "png": ".png",
    "gif": ".gif",
}
TARGETS: dict[str, Callable[[Path], None]] = {
    "parquet": _read_corpus,
    "csv": _read_corpus,
    "jsonl": _read_corpus,
    "tar": _read_corpus,
    "scores": _read_scores,
    "model": _read_model,
    "jpeg": _read_image,
    "png": _read_image,
    "gif": _read_image,
}


def _odd_refs(folder: Path, n: int, seed: int) -> Iterator[tuple[str, str | bytes | None]]:
    """Image references a table can hold that name no readable image."""
    (folder / "a-folder").mkdir(exist_ok=True)
    fixed: list[str | bytes | None] = [
        None,
        b"",
        "",
        "relative/missing.jpg",
        str(folder / "a-folder"),
        "/dev/null",
        "x\x00y.jpg",
        "/" + "n" * 5000,
        "https://example.com/a.jpg",
        "\ud800.jpg",
        "two\nlines.jpg",
    ]
    rng = np.random.default_rng(seed)
    for case in range(n):
        if case < len(fixed):
            ref = fixed[case]
        else:
            text = "".join(chr(int(c)) for c in rng.integers(1, 0x2FF, size=int(rng.integers(0, 40))))
            ref = text if case % 2 else text.encode("utf-8")
        yield f"ref {ref!r:.60}", ref


def _where(err: BaseException) -> str:
    """The last line of cleanpairs code the exception passed through."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "/cleanpairs/" in f.filename]
    frame = (ours or frames)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


def outcome(run: Callable[[], object]) -> str | None:
    """``None`` when ``run`` returned or refused with a one-line message; else what went wrong."""
    try:
        run()
    except CLEAN_ERRORS as err:
        message = str(err)
        if not message.strip() or "\n" in message:
            return f"{type(err).__name__} whose message is not one line: {message!r}"
        # A row's problem is its cp_status: an object's address in it would make the same
        # input give a different scores file in every run.
        if re.search(r" at 0x[0-9a-fA-F]+", message):
            return f"{type(err).__name__} whose message names a memory address: {message!r}"
    except Exception as err:
        return f"{type(err).__name__} at {_where(err)}: {str(err)[:300]!r}"
    return None


def _cases(kind: str, folder: Path, n: int, seed: int) -> Iterator[tuple[str, Callable[[], object]]]:
    if kind == "image_refs":
        for name, ref in _odd_refs(folder, n, seed):
            yield name, lambda ref=ref: decode_image(read_image_bytes(ref))
        return
    path = folder / f"damaged{SUFFIX.get(kind, '')}"
    if kind == "model":
        from cleanpairs.io.models import HEAD_FILES  # torch comes with it; only this worker pays

        # A damaged head goes in place of the intact one, in the model folder it belongs to.
        path = folder / "model" / HEAD_FILES["image"]
    for name, data in damaged_cases(intact_files(kind, folder), n, seed):
        path.write_bytes(data)
        yield name, lambda: TARGETS[kind](path)


def fuzz_kind(kind: str, folder: Path, n: int = CASES, seed: int = 0) -> list[str]:
    """Damage ``n`` files of ``kind`` and return a line for every case not answered cleanly.

    Each case runs under a watchdog: a case stuck longer than :data:`CASE_TIMEOUT_S` (a hang,
    even inside C code) ends the process with every thread's traceback on stderr, and the case
    is the last one announced on stdout.
    """
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for name, run in _cases(kind, folder, n, seed):
        print(f"{kind} {name}", flush=True)
        faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
        problem = outcome(run)
        faulthandler.cancel_dump_traceback_later()
        if problem is not None:
            failures.append(f"{kind} {name}: {problem}")
    return failures


def main(argv: list[str]) -> None:
    """The worker: ``KIND FOLDER [N] [SEED]``; prints the failures as JSON on the last line."""
    kind, folder = argv[0], Path(argv[1])
    n = int(argv[2]) if len(argv) > 2 else CASES
    seed = int(argv[3]) if len(argv) > 3 else 0
    print(json.dumps({"failures": fuzz_kind(kind, folder, n, seed)}), flush=True)


# --- (a) the readers in-process, in a worker that a crash or a hang cannot take down -------------


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_files_are_read_or_refused_cleanly(kind, tmp_path):
    worker = subprocess.run(
        [sys.executable, "-c", WORKER, kind, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CASE_TIMEOUT_S * 3 + 120,
        check=False,
    )
    lines = worker.stdout.strip().splitlines()
    assert worker.returncode == 0, (
        f"the {kind} worker died (exit {worker.returncode}) on {lines[-1] if lines else 'its start'}:\n"
        f"{worker.stderr[-3000:]}"
    )
    failures = json.loads(lines[-1])["failures"]
    assert not failures, "\n".join(failures[:20])
    assert len(lines) == 1 + CASES


def test_the_fuzz_reports_what_is_not_a_clean_refusal():
    def leaks():
        raise ValueError("from deep inside")

    def two_lines():
        raise InputError("cannot read x:\nmore")

    assert outcome(lambda: 1) is None
    assert outcome(lambda: read_pairs("/no/such/file.parquet")) is None
    assert outcome(leaks).startswith("ValueError at test_fuzz.py:")
    assert outcome(two_lines).startswith("InputError whose message is not one line")
    assert "names a memory address" in outcome(lambda: decode_image_as_pil_says(b"not an image"))


def decode_image_as_pil_says(data: bytes) -> None:
    """Decoding with PIL's own message, which names the buffer by its address."""
    from PIL import UnidentifiedImageError

    try:
        Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        raise ImageProblem(f"image cannot be decoded: {err}") from None


# --- what the fuzz found, kept as plain cases ----------------------------------------------------


def _invalid_utf8_strings(values: list[bytes]) -> pa.Array:
    """A string array holding bytes that are not UTF-8, as a damaged file yields."""
    raw = pa.array(values, pa.binary())
    return pa.StringArray.from_buffers(len(raw), raw.buffers()[1], raw.buffers()[2])


def test_text_that_is_not_utf8_is_refused_with_the_file_name(tmp_path):
    csv = tmp_path / "header.csv"
    csv.write_bytes(b"key,image,capt\xa3ion\na,x.jpg,dog\n")
    jsonl = tmp_path / "caption.jsonl"
    jsonl.write_bytes(b'{"key": "a", "image": "x.jpg", "caption": "d\xe5g"}\n')
    parquet = tmp_path / "caption.parquet"
    table = pa.table({"key": ["a", "b"], "image": ["x.jpg", "y.jpg"], "caption": ["dog", "cat"]})
    pq.write_table(table.set_column(2, "caption", _invalid_utf8_strings([b"dog", b"c\xffat"])), parquet)
    for path in (csv, jsonl, parquet):
        refusal = f"^cannot read {re.escape(str(path))}: .*(UTF-8|UTF8|utf8)"
        with pytest.raises(InputError, match=refusal) as err:
            read_pairs(path)
        assert "\n" not in str(err.value)


def test_a_damaged_scores_file_is_refused_in_one_line(tmp_path):
    scores = _write_scores_file(tmp_path / "a.scores.parquet")
    table = pq.read_table(scores)
    meta = dict(table.schema.metadata)
    meta[METADATA_KEY] = meta[METADATA_KEY][: len(meta[METADATA_KEY]) // 2]
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "half-meta.parquet")
    with pytest.raises(InputError, match="its 'cleanpairs' metadata is not valid JSON"):
        open_scores(tmp_path / "half-meta.parquet")
    pages = _damage_a_data_page(scores, tmp_path / "bad-page.parquet")
    handle, _ = open_scores(pages)
    with pytest.raises(InputError, match=f"^cannot read {re.escape(str(pages))}: [^\n]+$"):
        list(iter_batches(handle))
    with pytest.raises(InputError, match=f"^cannot read {re.escape(str(pages))}: [^\n]+$"):
        filter_scores(pages, tmp_path / "kept.parquet", thresh=0.5)
    assert not (tmp_path / "kept.parquet").exists()


def test_a_scores_file_with_columns_of_the_wrong_type_is_refused(tmp_path):
    table = pq.read_table(_write_scores_file(tmp_path / "a.scores.parquet"))
    as_text = pa.array([str(p) for p in table.column(P_CLEAN).to_pylist()])
    column = table.schema.get_field_index(P_CLEAN)
    pq.write_table(table.set_column(column, P_CLEAN, as_text), tmp_path / "t.parquet")
    with pytest.raises(InputError, match="its column cp_p_clean holds string, not floats"):
        filter_scores(tmp_path / "t.parquet", tmp_path / "kept.parquet", thresh=0.5)
    pq.write_table(table.append_column(P_CLEAN, table.column(P_CLEAN)), tmp_path / "twice.parquet")
    with pytest.raises(InputError, match="has the column 'cp_p_clean' more than once"):
        open_scores(tmp_path / "twice.parquet")


def _damage_a_data_page(path: Path, target: Path) -> Path:
    """A copy of ``path`` whose ``cp_p_clean`` page header is garbage; the footer is intact."""
    data = bytearray(path.read_bytes())
    row_group = pq.ParquetFile(path).metadata.row_group(0)
    column = next(i for i in range(row_group.num_columns) if row_group.column(i).path_in_schema == P_CLEAN)
    offset = row_group.column(column).data_page_offset
    data[offset : offset + 16] = b"\xff" * 16
    target.write_bytes(bytes(data))
    return target


def test_tables_of_odd_shape_are_refused_in_one_line(tmp_path):
    from cleanpairs.encoders import embed_corpus

    (tmp_path / "twice.csv").write_text("key,caption,caption,image\na,x,y,i.jpg\n")
    with pytest.raises(InputError, match="column 'caption' appears more than once"):
        read_pairs(tmp_path / "twice.csv")
    (tmp_path / "array.json").write_text('[{"key": "a", "image": "i.jpg", "caption": "dog"}]')
    with pytest.raises(InputError, match=r"\(expected one JSON object per line\)$"):
        read_pairs(tmp_path / "array.json")
    empty = pa.array([[], []], pa.list_(pa.float32()))
    pq.write_table(pa.table({"image_emb": empty, "text_emb": empty}), tmp_path / "empty.parquet")
    with pytest.raises(InputError, match="column 'image_emb' holds empty vectors"):
        embed_corpus(read_pairs(tmp_path / "empty.parquet"), "precomputed", progress=False)


def test_image_references_no_file_can_have_are_row_problems_in_one_line(tmp_path):
    for ref, reason in [
        ("x\x00y.jpg", "image path is not a valid file name: 'x\\x00y.jpg'"),
        ("\ud800.jpg", "image path is not a valid file name: '\\ud800.jpg'"),
        ("two\nlines.jpg", "image file not found: 'two\\nlines.jpg'"),
    ]:
        with pytest.raises(ImageProblem) as problem:
            read_image_bytes(ref)
        assert str(problem.value) == reason


def test_an_image_claiming_billions_of_pixels_is_a_row_problem():
    gif = bytearray(_encoded(Image.new("RGB", (8, 8)), "GIF"))
    gif[6:10] = b"\xff\xff\xff\xff"  # logical screen 65535 x 65535
    with pytest.raises(ImageProblem, match=r"^image too large \(4294836225 pixels, limit \d+\)$"):
        decode_image(bytes(gif))


def test_embeddings_with_nan_or_infinity_leave_their_row_unscored(tmp_path):
    from cleanpairs.pipeline import score_corpus

    table = _pairs_table(40)
    images = np.array(table.column("image_emb").to_pylist(), np.float32)
    texts = np.array(table.column("text_emb").to_pylist(), np.float32)
    images[3, 2], texts[7, 0] = np.nan, np.inf
    table = table.set_column(4, "image_emb", pa.array(list(images), pa.list_(pa.float32())))
    table = table.set_column(5, "text_emb", pa.array(list(texts), pa.list_(pa.float32())))
    pq.write_table(table, tmp_path / "emb.parquet")
    run = score_corpus(
        tmp_path / "emb.parquet", method="similarity", encoder="precomputed", progress=False, device="cpu"
    )
    out = pq.read_table(run.output)
    status = out.column("cp_status").to_pylist()
    assert status[3] == "embedding has NaN or inf"
    assert status[7] == "embedding has NaN or inf"
    assert status.count(STATUS_OK) == 38
    p_clean = out.column("cp_p_clean").to_numpy(zero_copy_only=False)
    assert np.isnan(p_clean[[3, 7]]).all() and np.isfinite(np.delete(p_clean, [3, 7])).all()


# --- (b) damaged files through the installed command ---------------------------------------------


def cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLEANPAIRS), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def assert_one_error_line(done: subprocess.CompletedProcess, starts: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {starts}"), done.stderr[-2000:]


def test_cli_refuses_damaged_tables_and_scores_in_one_line(tmp_path):
    intact = intact_files("parquet", tmp_path)[0]
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(intact[: len(intact) // 2])
    done = cli("score", truncated, "--encoder", "precomputed", "-o", tmp_path / "out.parquet")
    assert_one_error_line(done, f"cannot read {truncated}: ")
    tar = tmp_path / "shard.tar"
    whole = intact_files("tar", tmp_path)[0]
    tar.write_bytes(whole[: len(whole) * 2 // 3])
    refused = cli("score", tar, "-o", tmp_path / "out.parquet")
    assert_one_error_line(refused, f"cannot read {tar} as a tar shard: ")
    assert not (tmp_path / "out.parquet").exists()
    scores = _write_scores_file(tmp_path / "s.scores.parquet")
    damaged = _damage_a_data_page(scores, tmp_path / "damaged.scores.parquet")
    assert_one_error_line(cli("info", damaged), f"cannot read {damaged}: ")


def _damaged_image_corpus(folder: Path) -> tuple[Path, list[str]]:
    """12 intact Flickr8k photos and 8 damaged or missing ones; the statuses they should get."""
    from tests.conftest import flickr_slice

    pairs = flickr_slice(20, split="dev").to_pylist()[::5]
    photos = [FLICKR / "images" / Path(row["image"]).name for row in pairs]
    data = [p.read_bytes() for p in photos]
    rng = np.random.default_rng(0)
    gif_bomb = bytearray(_encoded(Image.new("RGB", (8, 8)), "GIF"))
    gif_bomb[6:10] = b"\xff\xff\xff\xff"
    damaged = {
        12: data[12][: len(data[12]) * 2 // 5],
        13: rng.bytes(5000),
        14: b"",
        15: _bit_flipped(data[15], rng),
        16: _encoded(Image.open(photos[16]), "PNG")[:200],
        17: bytes(gif_bomb),
    }
    (folder / "images").mkdir(parents=True)
    refs = []
    for i, photo in enumerate(photos):
        if i < 12 or i in damaged:
            target = folder / "images" / f"{i:02d}{photo.suffix}"
            target.write_bytes(damaged.get(i, data[i]))
            refs.append(f"images/{target.name}")
    refs += ["images/missing.jpg", "images/two\nlines.jpg"]
    table = pa.table(
        {"key": [f"p{i:02d}" for i in range(20)], "image": refs, "caption": [r["caption"] for r in pairs]}
    )
    pq.write_table(table, folder / "pairs.parquet")
    return folder / "pairs.parquet", [_status_of(str(folder / ref)) for ref in refs]


def _status_of(path: str) -> str:
    try:
        decode_image(read_image_bytes(path))
    except ImageProblem as problem:
        return str(problem)
    return STATUS_OK


def test_cli_scores_a_corpus_with_damaged_images_keeping_every_row(tmp_path, cache_dir):
    corpus, expected = _damaged_image_corpus(tmp_path / "corpus")
    assert expected.count(STATUS_OK) in (12, 13)  # the bit-flipped JPEG may still decode
    out = tmp_path / "scores.parquet"
    done = cli("score", corpus, "-o", out, "--method", "similarity", "--param", "epochs=2",
               "--device", "cpu", "--cache-dir", cache_dir)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    scores = pq.read_table(out)
    assert scores.column("key").to_pylist() == [f"p{i:02d}" for i in range(20)]
    assert scores.column("cp_status").to_pylist() == expected
    scored = np.array([s == STATUS_OK for s in expected])
    p_clean = scores.column("cp_p_clean").to_numpy(zero_copy_only=False)
    assert np.isfinite(p_clean[scored]).all() and np.isnan(p_clean[~scored]).all()
    assert f"not scored: 1 x image file not found: {corpus.parent / 'images' / 'missing.jpg'}" in done.stdout
