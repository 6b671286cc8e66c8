"""``similarity``: the baseline people use today.

Score each pair by the similarity of its image and caption, and read a clean posterior off
a two-component Gaussian mixture of those similarities. With an aligned encoder (open_clip)
the similarity is the encoder's own cosine; with separate spaces (the offline encoder),
projection heads are first trained with plain InfoNCE on the corpus as given, noise and all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cleanpairs.core.losses import info_nce
from cleanpairs.core.mixture import gmm_clean_posterior
from cleanpairs.core.training import HeadConfig, HeadTrainer, progress_bar
from cleanpairs.errors import ParameterError
from cleanpairs.methods import specs
from cleanpairs.methods.base import PairEmbeddings, PairScorer, PairScores
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
        else:
            if pairs.images.shape[1] != pairs.texts.shape[1]:
                raise ParameterError(
                    f"image ({pairs.images.shape[1]}-d) and text ({pairs.texts.shape[1]}-d) "
                    "embeddings are not in one space; use train_heads=auto or always"
                )
            heads = None
            similarity = np.einsum("ij,ij->i", pairs.pair_images(), pairs.texts).astype(np.float32)
        p_clean = gmm_clean_posterior(similarity, seed=self.seed)
        return PairScores.without_rematch(
            p_clean, p_clean, similarity, heads=heads, info={"epochs_run": params["epochs"] if train else 0}
        )
