"""The declarations of the registered methods: name, summary, hyperparameters, whether a trusted
set is needed, and where the implementation lives.

They are data, kept apart from the trainers so that ``cleanpairs methods`` and the checks of
``cleanpairs score`` (method name, ``--param`` values) answer without importing torch. A new
method is one file in this package plus its entry here; the file's :class:`PairScorer` names
its entry as ``spec``.
"""

from __future__ import annotations

from typing import Any

from cleanpairs.core.agreement import agreement_param
from cleanpairs.core.rematch import REMATCH_DEFAULTS
from cleanpairs.errors import ParameterError
from cleanpairs.methods.base import MethodSpec, Param, head_params


def parse_stages(text: str) -> list[int]:
    """``"2,2,2,4"`` -> epochs after the warm-up of each of crcl's stages."""
    try:
        stages = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        stages = []
    if not stages or min(stages) < 0:
        raise ParameterError(
            f"The 'stages' parameter of crcl must be comma-separated epoch counts such as '2,2,2,4'. "
            f"Got {text!r} instead."
        )
    return stages


def _check_stages(checked: dict[str, Any]) -> None:
    parse_stages(checked["stages"])


def _check_robust(checked: dict[str, Any]) -> None:
    parse_stages(checked["crcl_stages"])
    for name in ("batch_size", "dim"):
        if checked[name] == 1:
            raise ParameterError(
                f"The {name!r} parameter of robust must be 0 (each component's own) or at least 2. "
                "Got 1 instead."
            )
    if checked["share_high"] < checked["share_low"]:
        raise ParameterError("The 'share_high' parameter of robust must be at least its 'share_low'.")


CRCL = MethodSpec(
    name="crcl",
    summary="CRCL (NeurIPS'23): active complementary loss, momentum label refinement across restarts",
    module="cleanpairs.methods.crcl",
    params={
        "stages": Param(
            str, "1,1,1,3", "epochs after the warm-up of each stage; each stage restarts the heads"
        ),
        "warmup_epochs": Param(int, 1, "epochs at the start of every stage with frozen labels", low=0),
        "tau": Param(float, 0.05, "temperature of the matching probabilities", low=0, low_open=True),
        "momentum": Param(
            float, 0.8, "label momentum (alpha): share of the previous label kept", low=0, high=1
        ),
        "floor": Param(
            float,
            0.0,
            "labels below this are set to 0 (confident correction; the paper uses 0.1)",
            low=0,
            high=1,
        ),
        "complementary_weight": Param(float, 5.0, "weight of the complementary term", low=0),
        # Off by default: CRCL's labels pile up just above 0, and a second mixture over them
        # plus the agreement ranked worse at 80% shuffled and complete noise (docs/methods.md).
        "agreement": agreement_param(default=0.0),
        **head_params(batch_size=128),
    },
    validate=_check_stages,
)

L2RM = MethodSpec(
    name="l2rm",
    summary=(
        "L2RM (CVPR'24): beta-mixture split; noisy images and captions rematched by partial OT "
        "as soft targets"
    ),
    module="cleanpairs.methods.l2rm",
    params={
        "loss": Param(
            str,
            "infonce",
            "loss of the clean batch and split statistic: 'infonce' (InfoNCE, split on the "
            "corpus InfoNCE loss) or 'hinge' (the paper's: hardest-negative triplet, split on "
            "the mean-negative triplet loss)",
            choices=("infonce", "hinge"),
        ),
        "temperature": Param(
            float,
            0.1,
            "softmax temperature of InfoNCE, the warm-up and the rematch KL (tau)",
            low=0,
            low_open=True,
        ),
        "margin": Param(float, 0.2, "triplet margin (loss=hinge)", low=0, low_open=True),
        "warmup_epochs": Param(int, 1, "epochs of robust InfoNCE on all pairs before the first split", low=0),
        "epochs": Param(int, 5, "epochs of split + clean/noisy training after the warm-up", low=1),
        "rho": Param(
            float, 0.1, "share of a noisy batch's mass the transport moves", low=0, high=1, low_open=True
        ),
        "reg": Param(float, 0.01, "entropic regularisation of the batch transport", low=0, low_open=True),
        "noisy_weight": Param(float, 0.1, "weight of the noisy batch's rematch loss (paper: 1)", low=0),
        "p_threshold": Param(
            float, 0.5, "clean posterior above which a pair is taken as clean", low=0, high=1
        ),
        "rematch_k": Param(
            int, REMATCH_DEFAULTS["k"], "candidate captions per image in the final corpus rematch", low=1
        ),
        "rematch_mass": Param(
            float,
            REMATCH_DEFAULTS["mass"],
            "share of the noisy images' mass the final corpus rematch moves",
            low=0,
            high=1,
            low_open=True,
        ),
        "agreement": agreement_param(),
        **head_params(batch_doc="pairs per clean batch and per noisy batch"),
    },
)

MSCN = MethodSpec(
    name="mscn",
    summary="MSCN (CVPR'23): meta-net on a trusted set corrects similarities (bi-level); two nets co-purify",
    module="cleanpairs.methods.mscn",
    needs_trusted=True,
    params={
        "loss": Param(
            str,
            "infonce",
            "main loss: 'infonce' (soft-target InfoNCE with the corrected label) or 'hinge' "
            "(the paper's hardest-negative hinge with the adaptive margin)",
            choices=("infonce", "hinge"),
        ),
        "temperature": Param(float, 0.1, "InfoNCE temperature (loss=infonce)", low=0, low_open=True),
        "margin": Param(float, 0.2, "hinge margin (loss=hinge)", low=0, low_open=True),
        "warmup_epochs": Param(
            int, 1, "epochs on all pairs before the first purification; the meta-net learns directly", low=0
        ),
        "epochs": Param(int, 3, "epochs of bi-level training on the purified pairs", low=1),
        "meta_interval": Param(int, 1, "a bi-level meta update every this many steps", low=1),
        "meta_warmup_steps": Param(
            int,
            200,
            "direct meta-net steps on the meta data after the warm-up, before the first purification "
            "(and steps of its readout alone before every later one)",
            low=0,
        ),
        "meta_negatives": Param(
            str,
            "trusted",
            "where the meta data's mismatched pairs come from: random pairs of the trusted set, "
            "or of the corpus (as official)",
            choices=("trusted", "corpus"),
        ),
        "meta_lr": Param(
            float,
            1e-4,
            "Adam learning rate of the meta-net in the bi-level epochs (in the warm-up it learns at lr)",
            low=0,
            low_open=True,
        ),
        "meta_hidden": Param(int, 64, "hidden width of the meta-net", low=1),
        "networks": Param(
            int,
            2,
            "networks, each with its own meta-net, purifying the corpus for one another in turn "
            "(official: 2, A and B)",
            low=1,
        ),
        "p_threshold": Param(float, 0.5, "clean posterior above which a pair is trained on", low=0, high=1),
        # Twice the others' weight: at 1 its hard-noise AUROC only tied the baseline's (seed 0
        # +0.0006, seed 1 -0.006), at 2 it is above on both (docs/methods.md, mscn).
        "agreement": agreement_param(default=2.0),
        **head_params(batch_doc="pairs per batch (and per meta batch)"),
        "lr_step": Param(int, 0, "divide the learning rates by 10 every this many epochs (0: never)", low=0),
    },
)

NCR = MethodSpec(
    name="ncr",
    summary="NCR (NeurIPS'21): co-divide two heads by a loss GMM, rectify labels, soft-margin hinge",
    module="cleanpairs.methods.ncr",
    params={
        "loss": Param(
            str,
            "infonce",
            "training loss: 'hinge' (the paper's, soft margins) or 'infonce' "
            "(soft-target InfoNCE with the rectified label)",
            choices=("infonce", "hinge"),
        ),
        "temperature": Param(float, 0.1, "InfoNCE temperature (loss=infonce)", low=0, low_open=True),
        "warmup_epochs": Param(int, 1, "epochs on all pairs, unweighted, before the first split", low=0),
        "epochs": Param(int, 6, "co-training epochs after the warm-up", low=1),
        "margin": Param(float, 0.2, "hinge margin (alpha)", low=0, low_open=True),
        "soft_margin": Param(
            str,
            "exponential",
            "how the margin follows the rectified label",
            choices=("linear", "exponential", "sin"),
        ),
        "p_threshold": Param(
            float, 0.5, "clean posterior above which a pair is taken as clean", low=0, high=1
        ),
        "agreement": agreement_param(),
        "noisy_from": Param(
            float,
            1.0,
            "share of the co-training epochs before noisy pairs are trained on "
            "with their predicted labels (1: never; the paper uses 0.5)",
            low=0,
            high=1,
        ),
        **head_params(),
    },
)

RCAR = MethodSpec(
    name="rcar",
    summary=(
        "RCAR (FITEE'23): multi-task learning slows memorisation, beta-mixture split on the loss, "
        "labels refurbished with the noise posterior"
    ),
    module="cleanpairs.methods.rcar",
    params={
        "temperature": Param(
            float, 0.1, "InfoNCE temperature of the matching and intra-modal tasks", low=0, low_open=True
        ),
        "task_weight": Param(
            float, 1.0, "weight of the intra-modal tasks beside matching (0: matching alone)", low=0
        ),
        "neighbour_temperature": Param(
            float, 0.05, "temperature of the frozen spaces' neighbour distributions", low=0, low_open=True
        ),
        "warmup_epochs": Param(int, 1, "epochs on all pairs with label 1 before the first split", low=0),
        "epochs": Param(int, 5, "epochs of split + refurbishment after the warm-up", low=1),
        "train_noisy": Param(
            bool,
            False,
            "also train the pairs the mixture calls noisy, with their refurbished labels (the paper)",
        ),
        "agreement": agreement_param(),
        **head_params(),
    },
)

ROBUST = MethodSpec(
    name="robust",
    summary=(
        "ncr and crcl fit side by side, their posteriors pooled, leaning on crcl as far as the "
        "noise is shared by whole images"
    ),
    module="cleanpairs.methods.robust",
    # Its ncr component's epochs; crcl's stages restart, so they have no one length to halve.
    length_param="ncr_epochs",
    params={
        "share_low": Param(
            float,
            0.5,
            "image share of the combined statistic's variance at and below which it follows ncr alone",
            low=-1,
            high=1,
        ),
        "share_high": Param(
            float,
            0.7,
            "image share at and above which it follows crcl alone (linear between)",
            low=-1,
            high=1,
        ),
        "image_pooling": Param(
            float,
            0.25,
            "share of the mean over an image's other captions added to each caption's combined "
            "statistic, times crcl's weight (image-level noise: siblings share a caption's fate)",
            low=0,
        ),
        "image_centring": Param(
            float,
            0.1,
            "share of that mean taken away, times ncr's weight (caption-level noise: an image's "
            "level says nothing of which caption is wrong)",
            low=0,
            high=1,
        ),
        "ncr_epochs": Param(int, 6, "ncr's co-training epochs after its warm-up", low=1),
        "crcl_stages": Param(str, "1,1,1,3", "crcl's epochs after the warm-up of each stage"),
        "batch_size": Param(int, 0, "pairs per batch of both components (0: each its own default)", low=0),
        "dim": Param(int, 0, "shared embedding size of both components (0: each its own default)", low=0),
    },
    validate=_check_robust,
)

SIMILARITY = MethodSpec(
    name="similarity",
    summary="baseline: pair cosine (trained heads when the encoder is not aligned) + 2-GMM split",
    module="cleanpairs.methods.similarity",
    params={
        "train_heads": Param(
            str,
            "auto",
            "train heads: 'auto' (only when the encoder is not aligned), 'always', 'never'",
            choices=("auto", "always", "never"),
        ),
        "epochs": Param(int, 2, "training epochs of the heads", low=1),
        "batch_size": Param(int, 256, "pairs per training batch", low=2),
        "lr": Param(float, 1e-3, "AdamW learning rate", low=0, low_open=True),
        "dim": Param(int, 256, "shared embedding size", low=2),
        "hidden": Param(int, 0, "hidden width of each head (0: linear heads)", low=0),
        "temperature": Param(float, 0.05, "InfoNCE temperature", low=0, low_open=True),
    },
)

TSVC = MethodSpec(
    name="tsvc",
    summary=(
        "TSVC (AAAI'25): Coordinator, Master and Assistant heads of different make; soft labels "
        "from the variation of mutual information between them; consistency loss"
    ),
    module="cleanpairs.methods.tsvc",
    params={
        "temperature": Param(
            float, 0.1, "InfoNCE temperature of every model and of the MI estimate", low=0, low_open=True
        ),
        "warmup_epochs": Param(
            int, 1, "epochs of all three models on all pairs before the first split", low=0
        ),
        "epochs": Param(int, 5, "tripartite epochs after the warm-up", low=1),
        "variation_weight": Param(
            float, 0.25, "how much the spread of the views' mutual information lowers the soft label", low=0
        ),
        "consistency_weight": Param(
            float, 0.5, "weight of the Master's consistency loss towards the Assistant's view", low=0
        ),
        "p_threshold": Param(
            float, 0.5, "clean posterior above which a pair is given to a model", low=0, high=1
        ),
        "coordinator_dim": Param(int, 128, "shared space size of the Coordinator's MLP heads", low=2),
        "coordinator_hidden": Param(int, 512, "hidden width of the Coordinator's MLP heads", low=1),
        "assistant_hidden": Param(
            int, 0, "hidden width of the Assistant's image head into the caption space (0: linear)", low=0
        ),
        "agreement": agreement_param(),
        **head_params(batch_doc="pairs per batch (all three models)"),
    },
)


METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec for spec in (CRCL, L2RM, MSCN, NCR, RCAR, ROBUST, SIMILARITY, TSVC)
}
"""Every method shipped with cleanpairs, by name."""
