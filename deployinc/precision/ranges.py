"""Activation ranges that minimise the expected quantization error (``quantize --method mse``).

MinMax keeps every value representable and pays for a rare large one with a coarse step on all the others;
Percentile cuts a fixed share of the values however large the cut ones are (on a heavy-tailed stem activation it
clips the few values the next layer needs most). ``mse`` picks, for each tensor, the range whose expected squared
error is least on the calibration histogram: the squared distance of every value outside the range to its edge, plus
``step^2 / 12`` for every value inside (round-to-nearest of a value spread evenly over a step). It is the criterion
NNCF's and TensorRT's ``pytorch-quantization`` MSE calibrators use.

The histograms are the ones ONNX Runtime's histogram collector makes (``HistogramCollector``): of the values over
``[-t, t]`` for asymmetric activations, of the absolute values over ``[0, t]`` for symmetric ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Candidate upper (and lower) edges tried per tensor: fractions k / GRID of the observed extreme, and as many
#: spaced evenly in log down to 1/1000 of it (a tensor with a few huge values is best cut far below them).
GRID = 128


def _clip_error(centers: np.ndarray, counts: np.ndarray, edges: np.ndarray, above: bool) -> np.ndarray:
    """Sum of squared clipping errors for each candidate edge: values beyond it move onto it."""
    d = (centers[None, :] - edges[:, None]) if above else (edges[:, None] - centers[None, :])
    return (counts[None, :] * np.where(d > 0, d, 0.0) ** 2).sum(axis=1)


def _beyond(centers: np.ndarray, counts: np.ndarray, edges: np.ndarray, above: bool) -> np.ndarray:
    """How many values lie beyond each candidate edge."""
    mask = centers[None, :] > edges[:, None] if above else centers[None, :] < edges[:, None]
    return (counts[None, :] * mask).sum(axis=1)


def mse_range(hist: np.ndarray, bin_edges: np.ndarray, low: float, high: float, symmetric: bool) -> tuple[float, float]:
    """The (low, high) range of least expected squared quantization error for one tensor.

    Args:
        hist, bin_edges: The tensor's histogram (of |x| when ``symmetric``).
        low, high: The observed minimum and maximum.
        symmetric: int8 with zero point 0 (range ``(-a, a)``, 254 steps); else uint8 over ``(low, high)``, which
            ONNX Runtime widens to hold 0 (255 steps).
    """
    counts = np.asarray(hist, dtype=np.float64)
    e = np.asarray(bin_edges, dtype=np.float64)
    centers = (e[:-1] + e[1:]) / 2
    total = counts.sum()
    if total <= 0 or not np.isfinite(centers).all():
        return float(low), float(high)
    fractions = np.unique(np.concatenate([np.arange(1, GRID + 1) / GRID, np.geomspace(1e-3, 1.0, GRID)]))
    if symmetric:
        top = max(abs(float(low)), abs(float(high)))
        if top <= 0:
            return float(low), float(high)
        a = top * fractions
        step = a / 127.0
        err = _clip_error(centers, counts, a, True) + (total - _beyond(centers, counts, a, True)) * step**2 / 12
        best = float(a[int(np.argmin(err))])
        return -best, best
    his = max(float(high), 0.0) * fractions if high > 0 else np.zeros(1)
    los = min(float(low), 0.0) * fractions if low < 0 else np.zeros(1)
    clip_hi, out_hi = _clip_error(centers, counts, his, True), _beyond(centers, counts, his, True)
    clip_lo, out_lo = _clip_error(centers, counts, los, False), _beyond(centers, counts, los, False)
    step = (his[:, None] - los[None, :]) / 255.0
    err = clip_hi[:, None] + clip_lo[None, :] + (total - out_hi[:, None] - out_lo[None, :]) * step**2 / 12
    if not (step > 0).any():
        return float(low), float(high)
    i, j = np.unravel_index(int(np.argmin(np.where(step > 0, err, np.inf))), err.shape)
    return float(los[j]), float(his[i])


def mse_ranges(histograms: dict[str, tuple[Any, ...]], symmetric: bool) -> dict[str, tuple[Any, ...]]:
    """tensor -> (low, high, hist, bin_edges) for every histogram ONNX Runtime's collector made (its
    ``histogram_dict``: ``(hist, edges, min, max[, threshold])``), in the form its ``TensorsData`` takes."""
    out: dict[str, tuple[Any, ...]] = {}
    for name, h in histograms.items():
        hist, edges, low, high = h[0], h[1], float(h[2]), float(h[3])
        lo, hi = mse_range(hist, edges, low, high, symmetric)
        dtype = np.asarray(edges).dtype
        out[name] = (np.array(lo, dtype=dtype), np.array(hi, dtype=dtype), hist, edges)
    return out
