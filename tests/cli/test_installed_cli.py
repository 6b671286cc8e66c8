"""The installed ``cleanpairs`` command, run as a user runs it: every command as a real process of
the console script in the venv, in a fresh interpreter, on a tiny demo corpus, in a user's order.

In-process CliRunner tests share one interpreter whose imports are already made, so they miss
what only a fresh start shows (train, eval and search once died on start with a circular
import while every CliRunner test passed). Corpus, scores and model are made once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer

import cleanpairs
from cleanpairs.cli.main import app
from cleanpairs.schema import OUTPUT_COLUMNS, P_CLEAN, REMATCH_KEY

IMAGES, CAPTIONS = 30, 2
PAIRS = IMAGES * CAPTIONS


def installed_cli() -> Path:
    """The console script of the venv running the tests (else the one on PATH)."""
    beside = Path(sys.executable).parent / "cleanpairs"
    if beside.exists():
        return beside
    found = shutil.which("cleanpairs")
    if found is None:
        pytest.fail("no installed cleanpairs command: run `make env` (pip install -e .)")
    return Path(found)


class Cli:
    """Runs the installed command in a working folder with its own embedding cache."""

    def __init__(self, folder: Path, cache: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "CLEANPAIRS_CACHE": str(cache)}
        self.exe = installed_cli()

    def __call__(self, *args: object, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.exe), *(str(a) for a in args)],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if ok:
            assert done.returncode == 0, f"cleanpairs {' '.join(map(str, args))}:\n{done.stderr}"
        return done


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Cli:
    return Cli(tmp_path_factory.mktemp("installed-cli"), cache_dir)


@pytest.fixture(scope="module")
def corpus(cli: Cli) -> Path:
    made = cli("demo-corpus", "corpus", "--images", IMAGES, "--captions", CAPTIONS, "--noise", 0.3)
    assert f"wrote {PAIRS} pairs of {IMAGES} pictures, 30.0% mismatched" in made.stdout
    return cli.folder / "corpus" / "pairs.parquet"


@pytest.fixture(scope="module")
def scored(cli: Cli, corpus: Path) -> tuple[Path, str]:
    """The real path: the offline encoder on the demo pictures, then a method and rematching."""
    done = cli(
        "score", corpus, "-o", "scores.parquet", "--encoder", "offline", "--method", "similarity",
        "--rematch", "--device", "cpu", "--no-progress",
    )  # fmt: skip
    return cli.folder / "scores.parquet", done.stdout


@pytest.fixture(scope="module")
def model(cli: Cli, scored: tuple[Path, str]) -> tuple[Path, str]:
    done = cli("train", scored[0], "-o", "model", "--epochs", 2, "--device", "cpu", "--no-progress")
    return cli.folder / "model", done.stdout


def test_demo_corpus_writes_pictures_and_truth(corpus: Path):
    table = pq.read_table(corpus)
    assert table.num_rows == PAIRS and {"key", "image", "caption", "image_id", "is_clean"} <= set(
        table.column_names
    )
    assert all((corpus.parent / p).is_file() for p in table.column("image").to_pylist())


def test_methods_lists_and_details(cli: Cli):
    listed = [line.split()[0] for line in cli("methods").stdout.splitlines()]
    assert listed == ["crcl", "l2rm", "mscn", "ncr", "rcar", "robust", "similarity", "tsvc"]
    details = cli("methods", "--details", "ncr").stdout
    assert details.startswith("ncr: NCR") and "epochs" in details and "an int in the range" in details


def test_score_writes_every_row_with_the_cp_columns(scored: tuple[Path, str]):
    path, stdout = scored
    assert f"scored {PAIRS} of {PAIRS} rows with similarity on offline -> scores.parquet" in stdout
    assert "rematched" in stdout
    table = pq.read_table(path)
    assert table.num_rows == PAIRS and set(OUTPUT_COLUMNS) <= set(table.column_names)
    assert table.column(P_CLEAN).null_count == 0 and table.column(REMATCH_KEY).null_count < PAIRS
    meta = json.loads(table.schema.metadata[b"cleanpairs"])
    assert meta["method"] == "similarity" and meta["encoder"] == "offline"


def test_info_reports_detection_against_the_truth(cli: Cli, scored: tuple[Path, str]):
    out = cli("info", scored[0], "--truth", "is_clean").stdout
    assert f"rows       {PAIRS} ({PAIRS} scored)" in out and "against is_clean: AUROC" in out


def test_filter_splits_every_row(cli: Cli, scored: tuple[Path, str]):
    out = cli("filter", scored[0], "--thresh", 0.5, "-o", "kept.parquet", "--rejected", "rejected.parquet")
    kept, rejected = (pq.read_table(cli.folder / f"{n}.parquet") for n in ("kept", "rejected"))
    assert kept.num_rows + rejected.num_rows == PAIRS
    assert min(kept.column(P_CLEAN).to_pylist()) >= 0.5
    assert f"kept {kept.num_rows} of {PAIRS} rows" in out.stdout


def test_export_parquet_and_webdataset_shards(cli: Cli, scored: tuple[Path, str]):
    kept = sum(p >= 0.5 for p in pq.read_table(scored[0]).column(P_CLEAN).to_pylist())
    out = cli("export", scored[0], "-o", "export-parquet", "--thresh", 0.5).stdout
    shards = sorted((cli.folder / "export-parquet").glob("*.parquet"))
    assert sum(pq.read_table(s).num_rows for s in shards) == kept
    assert f"exported {kept} pairs in {len(shards)} parquet shards" in out
    out = cli("export", scored[0], "-o", "export-wds", "--format", "webdataset", "--thresh", 0.5).stdout
    tars = sorted((cli.folder / "export-wds").glob("*.tar"))
    samples = set()
    for tar in tars:
        with tarfile.open(tar) as handle:
            names = handle.getnames()
        samples |= {n.rsplit(".", 1)[0] for n in names}
        assert {n.rsplit(".", 1)[1] for n in names} == {"jpg", "txt", "json"}
    assert len(samples) == kept and f"exported {kept} pairs in {len(tars)} webdataset shards" in out


def test_train_writes_a_model(model: tuple[Path, str]):
    folder, stdout = model
    assert "trained on" in stdout and "for 2 epochs" in stdout
    assert json.loads((folder / "model.json").read_text())["encoder"] == "offline"


def test_eval_reports_recall(cli: Cli, model: tuple[Path, str], corpus: Path):
    out = cli("eval", model[0], corpus, "--device", "cpu", "--no-progress").stdout
    assert f"{PAIRS} captions of {IMAGES} images" in out and "rSum" in out


def test_search_by_text_and_by_image(cli: Cli, model: tuple[Path, str], corpus: Path):
    out = cli("search", model[0], "--text", "a red circle", "-k", 3, "--device", "cpu", "--no-progress")
    assert f"3 nearest of {IMAGES} images" in out.stdout and len(out.stdout.splitlines()) == 4
    picture = corpus.parent / pq.read_table(corpus).column("image")[0].as_py()
    out = cli("search", model[0], "--image", picture, "-k", 2, "--device", "cpu", "--no-progress")
    assert f"2 nearest of {PAIRS} captions" in out.stdout and len(out.stdout.splitlines()) == 3


def test_bench_on_the_tiny_corpus(cli: Cli, corpus: Path, scored: tuple[Path, str]):
    # After score, so the pictures and captions come from the embedding cache.
    out = cli(
        "bench", corpus, "-o", "bench", "--methods", "similarity", "--noise", "shuffle:0.4", "--seeds", 0,
        "--no-downstream", "--device", "cpu", "--no-progress",
    ).stdout  # fmt: skip
    assert "shuffle 40% seed 0  similarity  AUROC" in out and "1 runs measured" in out
    rows = (cli.folder / "bench" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("method,") and rows[1].startswith("similarity,shuffle,0.4,0,")
    assert (cli.folder / "bench" / "auroc.png").read_bytes()[:4] == b"\x89PNG"


def test_version(cli: Cli):
    assert cli("--version").stdout.strip() == f"cleanpairs {cleanpairs.__version__}"


def test_no_command_prints_the_help_on_stdout(cli: Cli):
    assert cli().stdout == cli("--help").stdout


def test_help_and_h_of_every_command(cli: Cli):
    commands = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"score", "info", "filter", "export", "train", "eval", "search", "bench"} <= set(commands)
    runs = [(*command, flag) for command in [(), *((c,) for c in commands)] for flag in ("--help", "-h")]
    # Help starts no heavy import, so a few at once finish sooner even on two cores.
    with ThreadPoolExecutor(max_workers=4) as pool:
        shown = dict(zip(runs, pool.map(lambda run: cli(*run).stdout, runs), strict=True))
    for command in [(), *((c,) for c in commands)]:
        long, short = shown[(*command, "--help")], shown[(*command, "-h")]
        assert long == short and long.startswith(f"Usage: {' '.join(['cleanpairs', *command])} ")
