"""Two-component mixtures that turn a per-pair statistic into a clean posterior."""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture


def gmm_clean_posterior(values: np.ndarray, *, seed: int = 0, higher_is_clean: bool = True) -> np.ndarray:
    """Posterior of the clean component of a two-component Gaussian mixture over ``values``.

    The values are scaled to [0, 1] first (as NCR does with per-pair losses). The clean
    component is the one with the larger mean when ``higher_is_clean`` (similarities), the
    smaller mean otherwise (losses). Values with no spread carry no evidence of noise: every
    pair then gets posterior 1.

    Returns
    -------
    numpy.ndarray
        float32, one posterior in [0, 1] per value.
    """
    x = np.asarray(values, dtype=np.float64)
    span = np.ptp(x) if len(x) else 0.0
    if len(x) < 2 or span <= 1e-12:
        return np.ones(len(x), dtype=np.float32)
    x = ((x - x.min()) / span).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=100, tol=1e-3, reg_covar=1e-4, random_state=seed)
    gmm.fit(x)
    means = gmm.means_.ravel()
    clean = int(np.argmax(means) if higher_is_clean else np.argmin(means))
    return gmm.predict_proba(x)[:, clean].astype(np.float32)
