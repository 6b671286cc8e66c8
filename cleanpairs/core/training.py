"""The training loop for projection heads over frozen embeddings."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cleanpairs.core.heads import ProjectionHead, TorchHeads
from cleanpairs.core.losses import info_nce
from cleanpairs.encoders.base import resolve_device
from cleanpairs.methods.base import PairEmbeddings


@dataclass(frozen=True)
class HeadConfig:
    """Sizes and optimisation settings of a pair of projection heads."""

    dim: int = 256
    hidden: int = 1024
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for batch order."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_contrastive_heads(
    pairs: PairEmbeddings,
    config: HeadConfig,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    desc: str = "training heads",
) -> TorchHeads:
    """Train an image head and a text head with symmetric InfoNCE on every pair as given.

    Captions of the same image are not used as each other's negatives.
    """
    dev = resolve_device(device)
    generator = seed_everything(seed)
    image_head = ProjectionHead(pairs.images.shape[1], config.dim, config.hidden).to(dev)
    text_head = ProjectionHead(pairs.texts.shape[1], config.dim, config.hidden).to(dev)
    optimizer = torch.optim.AdamW(
        [*image_head.parameters(), *text_head.parameters()], lr=config.lr, weight_decay=config.weight_decay
    )
    images = torch.from_numpy(pairs.images).to(dev)
    texts = torch.from_numpy(pairs.texts).to(dev)
    image_index = torch.from_numpy(pairs.image_index).to(dev)
    n = len(pairs)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=desc, disable=None if progress else True,
               unit="step", leave=False)
    for _ in range(config.epochs):
        image_head.train()
        text_head.train()
        order = torch.randperm(n, generator=generator).to(dev)
        for step in range(steps_per_epoch):
            idx = order[step * batch : (step + 1) * batch]
            owners = image_index[idx]
            same_image = owners[:, None] == owners[None, :]
            loss = info_nce(
                image_head(images[owners]), text_head(texts[idx]), config.temperature, same_image
            ).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update()
    bar.close()
    return TorchHeads(image_head, text_head, dev)


def pair_similarity(heads: TorchHeads, pairs: PairEmbeddings) -> np.ndarray:
    """Cosine similarity of each pair's image and caption in the heads' shared space."""
    image = heads.embed_images(pairs.images)[pairs.image_index]
    text = heads.embed_texts(pairs.texts)
    return np.einsum("ij,ij->i", image, text).astype(np.float32)
