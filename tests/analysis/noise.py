"""Synthetic RSS noise for the statistics tests: what a flat, healthy series looks like."""

from __future__ import annotations

import numpy as np

from soak.analysis.power import ar1_noise

KiB = 1024.0


def rss_noise(seed: int, n: int, phi: float = 0.7, sd: float = 200 * KiB) -> np.ndarray:
    """AR(1) noise of stationary sd, plus transient +/-64-256 KiB steps that come back."""
    rng = np.random.default_rng(seed)
    noise = ar1_noise(n, phi, sd, rng)
    for i in np.flatnonzero(rng.random(n) < 0.05):
        noise[i : i + int(rng.integers(1, 8))] += rng.choice([-1, 1]) * rng.uniform(64, 256) * KiB
    return noise
