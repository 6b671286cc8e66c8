"""The scoring pass written as bare numpy, for the scale benchmark's throughput ratio.

It reads the same shards, applies the fitted scorer's heads as numpy matrices, computes the same
statistics against the same reference sample, maps them through the same fitted splits, and
writes the input columns plus the same ``cp_*`` columns with pyarrow: what `cleanpairs apply`
does, without its checks (statuses, NaN rows, fingerprints), metadata, markers or torch.
Written for the two methods the benchmark runs, ``similarity`` and ``ncr``.

    python benchmarks/bare_pass.py SCORER_FOLDER SHARDS_FOLDER OUT_FOLDER
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import erf, logsumexp

from cleanpairs.core.agreement import CaptionAgreement
from cleanpairs.core.reference import SAME_IMAGE
from cleanpairs.methods import load_scorer
from cleanpairs.methods.ncr import correspondence_from_cost

BLOCK = 4096


def numpy_head(weights: dict[str, np.ndarray]):
    """A :class:`~cleanpairs.core.heads.ProjectionHead` as numpy: shortcut plus GELU MLP, unit rows."""
    w, b = weights["shortcut.weight"].T, weights["shortcut.bias"]
    mlp = ("mlp.0.weight" in weights) and (
        weights["mlp.0.weight"].T, weights["mlp.0.bias"], weights["mlp.2.weight"].T, weights["mlp.2.bias"]
    )  # fmt: skip

    def head(x: np.ndarray) -> np.ndarray:
        y = x @ w + b
        if mlp:
            h = x @ mlp[0] + mlp[1]
            y += (0.5 * h * (1 + erf(h / np.sqrt(2)))) @ mlp[2] + mlp[3]
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    return head


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def heads_of(scorer, name: str):
    module = scorer.state_.modules[name]
    return numpy_head({k: v.cpu().numpy() for k, v in module.state_dict().items()})


def statistics(image_head, text_head, images, texts, reference, temperature, margin):
    """Cosine, InfoNCE against the reference sample, and the hinge cost, per pair, in blocks."""
    out = {"cosine": [], "info_nce": [], "hinge": []}
    ref_images, ref_texts = image_head(reference.images), text_head(reference.texts)
    raw_ref, raw_text_images = unit(reference.images), unit(reference.text_images)
    for start in range(0, len(texts), BLOCK):
        raw = images[start : start + BLOCK]
        own, txt = image_head(raw), text_head(texts[start : start + BLOCK])
        positive = np.einsum("ij,ij->i", own, txt)
        to_images, to_texts = txt @ ref_images.T, own @ ref_texts.T
        image_ok, text_ok = unit(raw) @ raw_ref.T < SAME_IMAGE, unit(raw) @ raw_text_images.T < SAME_IMAGE
        own_logit = (positive / temperature)[:, None]
        nce = [logsumexp(np.concatenate([own_logit, np.where(ok, s / temperature, -np.inf)], axis=1), axis=1)
               for s, ok in ((to_images, image_ok), (to_texts, text_ok))]  # fmt: skip
        hinge = sum(
            np.sum(np.clip(margin + s - positive[:, None], 0, None) * ok, axis=1) / np.maximum(ok.sum(1), 1)
            for s, ok in ((to_texts, text_ok), (to_images, image_ok))
        )
        out["cosine"].append(positive)
        out["info_nce"].append((nce[0] + nce[1]) / 2 - own_logit[:, 0])
        out["hinge"].append(hinge)
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


def score_table(scorer, table: pa.Table) -> dict[str, np.ndarray]:
    """``p_clean``, ``soft_label`` and ``similarity`` of one shard's pairs."""

    def matrix(name: str) -> np.ndarray:
        column = table.column(name).combine_chunks()
        return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), -1)

    images, texts = matrix("image_emb"), matrix("text_emb")
    alignment = getattr(scorer, "alignment_", None)
    if alignment is not None:  # a scorer fit with align: the corpus alignment's maps, as numpy
        images = unit((images - alignment.image_mean) @ alignment.image_map)
        texts = unit((texts - alignment.text_mean) @ alignment.text_map)
    state = scorer.state_
    if scorer.name == "similarity":
        if state.modules:
            image_head, text_head = heads_of(scorer, "image"), heads_of(scorer, "text")
        else:  # an aligned encoder: its own dot product, no heads
            image_head = text_head = lambda x: x
        blocks = [slice(i, i + BLOCK) for i in range(0, len(texts), BLOCK)]
        cosine = np.concatenate([np.sum(image_head(images[b]) * text_head(texts[b]), axis=1) for b in blocks])
        p_clean = state.splits["p_clean"].posterior(cosine)
        return {"p_clean": p_clean, "soft_label": p_clean, "similarity": cosine}
    params = scorer.params_
    _, image_index = np.unique(table.column("image_id").to_numpy(), return_inverse=True)
    agreement = CaptionAgreement(texts, image_index)
    posteriors, predictions, cosines = [], [], []
    for k in range(2):
        stats = statistics(heads_of(scorer, f"m{k}.image"), heads_of(scorer, f"m{k}.text"), images, texts,
                           state.reference, params["temperature"], params["margin"])  # fmt: skip
        posteriors.append(state.splits[f"m{k}"].posterior(-stats["info_nce"], agreement))
        top = state.scalars["top"][k]
        predictions.append(correspondence_from_cost(stats["hinge"], params["margin"], top))
        cosines.append(stats["cosine"])
    p_clean = np.mean(posteriors, axis=0).astype(np.float32)
    clean = p_clean > state.scalars["clean_threshold"]
    soft = np.where(clean, p_clean + (1 - p_clean) * predictions[0], np.mean(predictions, axis=0))
    return {"p_clean": p_clean, "soft_label": np.clip(soft, 0, 1).astype(np.float32),
            "similarity": np.mean(cosines, axis=0)}  # fmt: skip


def bare_pass(scorer_folder: Path, shards: Path, out: Path) -> float:
    """Score every shard of ``shards`` into ``out``; the wall seconds."""
    start = time.perf_counter()
    scorer = load_scorer(scorer_folder, device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    for shard in sorted(shards.glob("*.parquet")):
        table = pq.read_table(shard)
        columns = score_table(scorer, table)
        n = table.num_rows
        for name in ("p_clean", "soft_label", "similarity"):
            table = table.append_column(f"cp_{name}", pa.array(columns[name], pa.float32()))
        table = table.append_column("cp_rematch_key", pa.nulls(n, table.column("key").type))
        table = table.append_column("cp_rematch_score", pa.nulls(n, pa.float32()))
        table = table.append_column("cp_status", pa.array(["ok"] * n, pa.string()))
        pq.write_table(table, out / shard.name)
    return time.perf_counter() - start


if __name__ == "__main__":
    print(bare_pass(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
