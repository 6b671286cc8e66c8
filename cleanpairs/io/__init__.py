"""Everything that touches files: reading corpora, loading images, writing scores and exports."""

from cleanpairs.io.atomic import atomic_output, refuse_overwrite
from cleanpairs.io.images import ImageProblem, decode_image, read_image_bytes
from cleanpairs.io.tables import Corpus, read_pairs

__all__ = [
    "Corpus",
    "ImageProblem",
    "atomic_output",
    "decode_image",
    "read_image_bytes",
    "read_pairs",
    "refuse_overwrite",
]
