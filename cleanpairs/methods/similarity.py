"""``similarity``: the baseline people use today.

Score each pair by the similarity of its image and caption, and read a clean posterior off
a two-component Gaussian mixture of those similarities. With an aligned encoder (open_clip)
the similarity is the encoder's own cosine; with separate spaces (the offline encoder),
projection heads are first trained with plain InfoNCE on the corpus as given, noise and all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cleanpairs.contract import Heads
from cleanpairs.core.agreement import AgreementSplit
from cleanpairs.core.heads import TorchHeads
from cleanpairs.core.losses import info_nce
from cleanpairs.core.mixture import fit_gmm_split
from cleanpairs.core.reference import cosine_statistic, reference_statistic
from cleanpairs.core.training import HeadConfig, HeadTrainer, progress_bar
from cleanpairs.errors import ParameterError
from cleanpairs.methods import specs
from cleanpairs.methods.base import FittedState, PairEmbeddings, PairScorer, PairScores
from cleanpairs.methods.registry import register


@register
class SimilarityScorer(PairScorer):
    """Pair similarity with a Gaussian-mixture split: no noise handling at all."""

    spec = specs.SIMILARITY

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:
        train = params["train_heads"] == "always" or (params["train_heads"] == "auto" and not pairs.aligned)
        if train:
            config = HeadConfig.from_params(params)
            with progress_bar(params["epochs"] * (len(pairs) // params["batch_size"]), self.name) as bar:
                trainer = HeadTrainer(pairs, config, seed=self.seed, device=self.device, progress=bar)
                for epoch in range(params["epochs"]):
                    trainer.run_epoch(lambda b: info_nce(b.scores, params["temperature"], b.same_image))
                    self.epoch_done(epoch, trainer.heads)
            heads = trainer.heads()
            similarity = trainer.similarity()
            modules = {"image": trainer.image_head, "text": trainer.text_head}
        else:
            if pairs.images.shape[1] != pairs.texts.shape[1]:
                raise ParameterError(
                    f"image ({pairs.images.shape[1]}-d) and text ({pairs.texts.shape[1]}-d) "
                    "embeddings are not in one space; use train_heads=auto or always"
                )
            heads, modules = None, {}
            similarity = encoder_similarity(pairs)
        p_clean, mapping = fit_gmm_split(similarity, seed=self.seed)
        self.state_ = FittedState(modules, {"p_clean": AgreementSplit.plain(mapping)})
        return PairScores.without_rematch(
            p_clean, p_clean, similarity, heads=heads, info={"epochs_run": params["epochs"] if train else 0}
        )

    def _score_pairs(self, pairs: PairEmbeddings) -> PairScores:
        """The pairs' similarity (heads' cosine, or the encoder's), through the fitted mixture."""
        modules = self.state_.modules
        if modules:
            similarity = reference_statistic(
                modules["image"], modules["text"], pairs, None, cosine_statistic, device=self.device_
            )
        else:
            similarity = encoder_similarity(pairs)
        p_clean = self.state_.splits["p_clean"].posterior(similarity)
        return PairScores.without_rematch(p_clean, p_clean, similarity)

    def _heads(self) -> Heads | None:
        modules = self.state_.modules
        return TorchHeads(modules["image"], modules["text"], self.device_) if modules else None


def encoder_similarity(pairs: PairEmbeddings) -> np.ndarray:
    """Each pair's dot product in the encoder's own space (an aligned encoder's cosine)."""
    return np.einsum("ij,ij->i", pairs.pair_images(), pairs.texts).astype(np.float32)
