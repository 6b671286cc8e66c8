"""Frozen image and text encoders, their on-disk cache, and corpus embedding."""

from cleanpairs.encoders.base import ENCODER_IDS, Encoder, check_encoder_id, make_encoder
from cleanpairs.encoders.cache import EmbeddingCache, default_cache_dir
from cleanpairs.encoders.embed import EmbeddedCorpus, embed_corpus

__all__ = [
    "ENCODER_IDS",
    "EmbeddedCorpus",
    "EmbeddingCache",
    "Encoder",
    "check_encoder_id",
    "default_cache_dir",
    "embed_corpus",
    "make_encoder",
]
