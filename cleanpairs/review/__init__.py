"""The static review site: what cleanpairs found, for a person to look at and mark."""

from cleanpairs.review.site import ReviewResult, build_review

__all__ = ["ReviewResult", "build_review"]
