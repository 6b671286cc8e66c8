"""Patch-level evidence (issue #18, item 4): does matching caption words to image regions lift
detection over the pooled heads? An experiment, not a library feature (docs/methods.md,
"Patch-level evidence (tried)").

The pooled heads see EfficientNet-Lite0's pooled 1280-d vector and MiniLM's pooled 384-d
sentence embedding. This script adds a SCAN-style text-to-region matching head: the 7x7x1280
feature map before pooling (49 regions, cached as float16) and MiniLM's last hidden states
(one 384-d vector per word piece, [CLS] and [SEP] left out) are projected linearly into a
shared 256-d space; each word attends over the 49 regions with ``softmax(lambda * cosine)``
(lambda = 9, as SCAN's lambda_1), the word's score is the attention-weighted cosine, and the
pair's patch similarity is the mean over its words. The patch similarity either replaces the
pooled cosine (``--combine replace``) or is averaged with it (``--combine add``), everywhere
the method reads a score: its training batches (same loss as the pooled heads), its split
statistic (NCR's corpus InfoNCE loss, similarity's cosine) and its output similarity.

The methods run unchanged: their :class:`HeadTrainer` is swapped for one whose batch scores
include the patch similarity. NCR's split statistic measures each pair against 256 sampled
images and captions instead of 1024 (the cost of patch matching over the corpus); the pooled
baseline is run both ways (``pooled`` with the library's 1024, ``pooled-256`` with 256).

Encoding (``--encode``) writes, for the first ``--images`` images of Flickr8k train and their
captions: ``img_spatial.npy`` (n, 49, 1280) float16, ``img_pooled.npy`` (the encoder's own
pooled unit vectors), ``txt_tokens.npy`` (pairs, 40, 384) float16, ``txt_lengths.npy`` and
``txt_pooled.npy`` (MiniLM's sentence embeddings), with the encode time.

    OMP_NUM_THREADS=1 python benchmarks/patches.py --encode --images 2000 --cache /tmp/patches/cache
    OMP_NUM_THREADS=1 python benchmarks/patches.py --cache /tmp/patches/cache \\
        --methods similarity,ncr --rates 0.6,0.8 --variants pooled,add,replace
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from cleanpairs.contract import PairEmbeddings
from cleanpairs.core import training
from cleanpairs.encoders.base import unit_rows
from cleanpairs.methods.registry import get_method
from cleanpairs.metrics import detection_metrics
from cleanpairs.noise import shuffle_captions

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k"
MAX_TOKENS = 40
ATTENTION = 9.0  # SCAN's lambda_1: sharpness of a word's attention over the regions


def encode(cache: Path, n_images: int, data: Path) -> dict[str, float]:
    """Spatial maps, pooled vectors, token states and sentence embeddings of the subset."""
    from PIL import Image

    from cleanpairs.encoders.offline import OfflineEncoder, load_efficientnet_lite0, preprocess

    cache.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(data / "train.parquet").to_pandas()
    ids = list(dict.fromkeys(table.image_id))[:n_images]
    subset = table[table.image_id.isin(set(ids))].reset_index(drop=True)
    subset.to_parquet(cache / "subset.parquet")
    paths = subset.drop_duplicates("image_id").image.tolist()
    model = load_efficientnet_lite0()
    spatial = np.zeros((len(paths), 49, 1280), np.float16)
    pooled = np.zeros((len(paths), 1280), np.float32)
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(paths), 32):
            pixels = np.stack([preprocess(Image.open(data / p).convert("RGB")) for p in paths[s : s + 32]])
            regions = model.forward_features(torch.from_numpy(pixels)).flatten(2).transpose(1, 2)
            spatial[s : s + 32] = regions.numpy().astype(np.float16)
            # The model's own head is a global average pool: the pooled embedding, exactly.
            pooled[s : s + 32] = unit_rows(regions.mean(1).numpy())
    image_s = time.perf_counter() - start
    np.save(cache / "img_spatial.npy", spatial)
    np.save(cache / "img_pooled.npy", pooled)

    captions = subset.caption.tolist()
    start = time.perf_counter()
    outputs = OfflineEncoder(device="cpu").text_model.encode(
        captions, batch_size=128, output_value=None, convert_to_numpy=False, show_progress_bar=False
    )
    text_s = time.perf_counter() - start
    tokens = np.zeros((len(captions), MAX_TOKENS, 384), np.float16)
    lengths = np.zeros(len(captions), np.int64)
    sentences = np.zeros((len(captions), 384), np.float32)
    for i, out in enumerate(outputs):
        states = out["token_embeddings"].float().numpy()[:MAX_TOKENS]
        tokens[i, : len(states)] = states
        lengths[i] = len(states)
        sentences[i] = out["sentence_embedding"].float().numpy()
    np.save(cache / "txt_tokens.npy", tokens)
    np.save(cache / "txt_lengths.npy", lengths)
    np.save(cache / "txt_pooled.npy", unit_rows(sentences))
    timing = {"image_s": image_s, "text_s": text_s, "images": len(paths), "captions": len(captions)}
    (cache / "encode.json").write_text(json.dumps(timing))
    return timing


class PatchData:
    """The subset's region maps and word states, as tensors, and the current caption order."""

    def __init__(self, cache: Path) -> None:
        self.regions = torch.from_numpy(np.load(cache / "img_spatial.npy"))
        tokens = np.load(cache / "txt_tokens.npy")
        lengths = np.load(cache / "txt_lengths.npy")
        # Words only: [CLS] (position 0) and [SEP] (the last) carry no region to match.
        self.words = torch.from_numpy(tokens[:, 1:-1].copy())
        positions = np.arange(self.words.shape[1])[None, :]
        self.mask = torch.from_numpy(positions < (lengths[:, None] - 2))
        self.order = torch.arange(len(tokens))

    def reorder(self, source: np.ndarray) -> None:
        """Pair ``i`` now carries the caption of pair ``source[i]`` (the injected noise)."""
        self.order = torch.from_numpy(np.asarray(source, np.int64))


DATA_IN_USE: PatchData | None = None
COMBINE = "add"


def patch_similarity(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SCAN text-to-region similarity of every image with every caption.

    ``regions`` (m, 49, d) and ``words`` (k, L, d) are unit rows; ``mask`` (k, L) marks real
    words. Returns (m, k): per word, the cosine to the regions weighted by a softmax over them;
    averaged over the caption's words.
    """
    m, r, d = regions.shape
    k, length, _ = words.shape
    cos = (regions.reshape(m * r, d) @ words.reshape(k * length, d).T).reshape(m, r, k, length)
    attended = (torch.softmax(ATTENTION * cos, dim=1) * cos).sum(dim=1)  # (m, k, L)
    weights = mask.to(attended.dtype)
    return (attended * weights).sum(-1) / weights.sum(-1).clamp(min=1)


def diagonal_patch_similarity(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`patch_similarity` of image ``i`` with caption ``i`` only, ``(n,)``."""
    cos = torch.einsum("nrd,nld->nrl", regions, words)
    attended = (torch.softmax(ATTENTION * cos, dim=1) * cos).sum(dim=1)
    weights = mask.to(attended.dtype)
    return (attended * weights).sum(-1) / weights.sum(-1).clamp(min=1)


class PatchTrainer(training.HeadTrainer):
    """A :class:`HeadTrainer` whose scores add (or are) the patch similarity."""

    def __init__(self, pairs: PairEmbeddings, config: training.HeadConfig, **kwargs) -> None:
        super().__init__(pairs, config, **kwargs)
        assert DATA_IN_USE is not None
        self.patch = DATA_IN_USE
        self.region_head = nn.Linear(self.patch.regions.shape[-1], config.dim).to(self.device)
        self.word_head = nn.Linear(self.patch.words.shape[-1], config.dim).to(self.device)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def parameters(self) -> list[nn.Parameter]:
        if not hasattr(self, "word_head"):  # the base class builds its optimiser before these exist
            return super().parameters()
        return [*super().parameters(), *self.region_head.parameters(), *self.word_head.parameters()]

    def _regions(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.region_head(self.patch.regions[images].float()), dim=-1)

    def _words(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.patch.order[pairs]
        mask = self.patch.mask[rows]
        used = int(mask.sum(1).max())
        words = self.patch.words[rows][:, :used].float()
        return nn.functional.normalize(self.word_head(words), dim=-1), mask[:, :used]

    def _combine(self, pooled: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        return patch if COMBINE == "replace" else (pooled + patch) / 2

    def scores_between(self, images: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Score of every image of ``images`` (rows of the image matrix) with every caption of ``pairs``."""
        pooled = self.image_head(self.images[images]) @ self.text_head(self.texts[pairs]).T
        words, mask = self._words(pairs)
        return self._combine(pooled, patch_similarity(self._regions(images), words, mask))

    def batch(self, idx: torch.Tensor) -> training.Batch:
        owners = self.image_index[idx]
        return training.Batch(idx, self.scores_between(owners, idx), owners[:, None] == owners[None, :])

    @torch.no_grad()
    def similarity(self) -> np.ndarray:
        self.image_head.eval()
        self.text_head.eval()
        out = []
        for start in range(0, self.n, 1024):
            idx = torch.arange(start, min(start + 1024, self.n))
            owners = self.image_index[idx]
            pooled = (self.image_head(self.images[owners]) * self.text_head(self.texts[idx])).sum(1)
            words, mask = self._words(idx)
            out.append(self._combine(pooled, diagonal_patch_similarity(self._regions(owners), words, mask)))
        return torch.cat(out).float().cpu().numpy()

    @torch.no_grad()
    def corpus_loss(self, temperature: float, *, negatives: int = 256, block: int = 256) -> np.ndarray:
        """:meth:`HeadTrainer.corpus_loss` with the combined score, against 256 sampled negatives."""
        self.image_head.eval()
        self.text_head.eval()
        idx = self.image_index
        n_images = len(self.images)
        pick_images = torch.randperm(n_images, generator=self.generator)[:negatives].to(self.device)
        pick_texts = torch.randperm(self.n, generator=self.generator)[:negatives].to(self.device)
        positive = torch.from_numpy(self.similarity()).to(self.device) / temperature
        # Image to text: every distinct image against the sampled captions, once.
        to_texts_all = torch.cat([
            self.scores_between(torch.arange(s, min(s + block, n_images)), pick_texts)
            for s in range(0, n_images, block)
        ]) / temperature
        t2i = torch.empty(self.n, device=self.device)
        i2t = torch.empty(self.n, device=self.device)
        for start in range(0, self.n, block):
            rows = torch.arange(start, min(start + block, self.n))
            own = positive[rows, None]
            to_images = self.scores_between(pick_images, rows).T / temperature
            to_images = to_images.masked_fill(idx[rows, None] == pick_images[None, :], float("-inf"))
            t2i[rows] = torch.logsumexp(torch.cat([own, to_images], dim=1), dim=1)
            to_texts = to_texts_all[idx[rows]]
            to_texts = to_texts.masked_fill(idx[rows, None] == idx[pick_texts][None, :], float("-inf"))
            i2t[rows] = torch.logsumexp(torch.cat([own, to_texts], dim=1), dim=1)
        return ((t2i + i2t) / 2 - positive).float().cpu().numpy()


class Pooled256Trainer(training.HeadTrainer):
    """The pooled heads, with NCR's corpus statistic against 256 negatives (as :class:`PatchTrainer`)."""

    def corpus_loss(self, temperature: float, *, negatives: int = 256, block: int = 4096) -> np.ndarray:
        return super().corpus_loss(temperature, negatives=negatives, block=block)


def run(method: str, variant: str, rate: float, cache: Path, seed: int) -> dict[str, float | str]:
    """Fit ``method`` on the subset with ``rate`` shuffled captions; detection metrics and fit time."""
    global DATA_IN_USE, COMBINE
    subset = pq.read_table(cache / "subset.parquet").to_pandas()
    image_ids = subset.image_id.to_numpy()
    noise = shuffle_captions(image_ids, rate, seed=seed)
    row_of = {image: i for i, image in enumerate(dict.fromkeys(image_ids))}  # as encoded
    pairs = PairEmbeddings(
        images=np.load(cache / "img_pooled.npy"),
        texts=np.load(cache / "txt_pooled.npy")[noise.caption_source],
        image_index=np.array([row_of[i] for i in image_ids]),
        keys=subset.key.to_numpy(),
    )
    module = __import__(get_method(method).__module__, fromlist=["HeadTrainer"])
    trainer = {"pooled": training.HeadTrainer, "pooled-256": Pooled256Trainer}.get(variant, PatchTrainer)
    if trainer is PatchTrainer:
        DATA_IN_USE = PatchData(cache)
        DATA_IN_USE.reorder(noise.caption_source)
        COMBINE = variant
    module.HeadTrainer = trainer
    start = time.perf_counter()
    scores = get_method(method)(seed=seed, device="cpu").fit(pairs).score()
    fit_s = time.perf_counter() - start
    module.HeadTrainer = training.HeadTrainer
    metrics = detection_metrics(scores.p_clean, noise.is_clean)
    similarity_auroc = detection_metrics(
        (scores.similarity - scores.similarity.min()) / np.ptp(scores.similarity), noise.is_clean
    )["auroc"]
    return {
        "method": method, "variant": variant, "rate": rate, "seed": seed, "auroc": metrics["auroc"],
        "ap": metrics["ap"], "estimated_noise_rate": metrics["estimated_noise_rate"],
        "true_noise_rate": metrics["true_noise_rate"], "similarity_auroc": similarity_auroc, "fit_s": fit_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/patches/cache"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--encode", action="store_true", help="encode the subset first")
    parser.add_argument("--images", type=int, default=2000, help="first images of train (with --encode)")
    parser.add_argument("--methods", default="similarity,ncr")
    parser.add_argument("--rates", default="0.6,0.8")
    parser.add_argument("--variants", default="pooled,pooled-256,add,replace")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per run here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.encode:
        print(json.dumps(encode(args.cache, args.images, args.data)), flush=True)
    for rate in [float(r) for r in args.rates.split(",") if r]:
        for method in [m for m in args.methods.split(",") if m]:
            for variant in [v for v in args.variants.split(",") if v]:
                if variant == "pooled-256" and method != "ncr":
                    continue
                row = json.dumps(run(method, variant, rate, args.cache, args.seed))
                print(row, flush=True)
                if args.out is not None:
                    with args.out.open("a") as out:
                        out.write(row + "\n")


if __name__ == "__main__":
    main()
