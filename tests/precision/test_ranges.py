"""Ranges of least expected squared error (deployinc.precision.ranges, ``quantize --method mse``)."""

from __future__ import annotations

import numpy as np
import pytest

from deployinc.precision.ranges import mse_range, mse_ranges


def _expected_error(x: np.ndarray, lo: float, hi: float, levels: int) -> float:
    """The squared error of quantizing ``x`` to ``levels`` steps over [lo, hi] (0 included), measured."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    step = (hi - lo) / levels
    q = np.clip(np.round((x - lo) / step), 0, levels) * step + lo
    return float(((q - x) ** 2).sum())


def test_a_heavy_tail_is_clipped_and_the_error_is_less_than_minmax_and_percentile():
    x = np.abs(np.random.default_rng(0).laplace(0, 1, 200_000)).astype(np.float32)  # post-ReLU, a heavy tail
    hist, edges = np.histogram(x, bins=2048, range=(-x.max(), x.max()))
    lo, hi = mse_range(hist, edges, float(x.min()), float(x.max()), symmetric=False)
    assert lo == 0.0 and 0.5 * x.max() < hi < 0.95 * x.max()  # the far tail is cut (8-bit steps are fine: not much)
    mse = _expected_error(x, lo, hi, 255)
    assert mse < _expected_error(x, 0.0, float(x.max()), 255)  # minmax
    assert mse < _expected_error(x, 0.0, float(np.percentile(x, 99.9)), 255)  # a percentile that cuts too much


def test_without_outliers_the_range_stays_near_the_extremes():
    x = np.random.default_rng(1).uniform(-2.0, 3.0, 100_000).astype(np.float32)
    hist, edges = np.histogram(x, bins=2048, range=(-3.0, 3.0))
    lo, hi = mse_range(hist, edges, float(x.min()), float(x.max()), symmetric=False)
    assert lo == pytest.approx(x.min(), rel=0.03) and hi == pytest.approx(x.max(), rel=0.03)


def test_symmetric_ranges_are_centred_on_zero():
    rng = np.random.default_rng(2)
    x = rng.laplace(0, 1, 100_000).astype(np.float32)
    hist, edges = np.histogram(np.abs(x), bins=2048)
    lo, hi = mse_range(hist, edges, float(x.min()), float(x.max()), symmetric=True)
    assert lo == -hi and 0.5 * np.abs(x).max() < hi < 0.95 * np.abs(x).max()


def test_ranges_come_back_in_the_form_ort_takes_and_an_empty_tensor_keeps_its_extremes():
    hist, edges = np.histogram(np.zeros(10, np.float32), bins=8, range=(-1.0, 1.0))
    out = mse_ranges({"t": (hist, edges.astype(np.float32), np.float32(0), np.float32(0), np.float32(0))}, symmetric=False)
    lo, hi, h, e = out["t"]
    assert float(lo) == 0.0 and float(hi) == 0.0 and lo.dtype == np.float32 and h is hist
    assert mse_range(np.zeros(4), np.linspace(0, 1, 5), 0.0, 1.0, symmetric=True) == (0.0, 1.0)


def test_quantize_with_mse_records_it_and_its_ranges_lie_within_minmax(tmp_path):
    import json

    import torch
    from torch import nn

    from deployinc.core.images import natural_images
    from deployinc.precision.int8 import quantize_int8

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)  # fmt: skip
    images = natural_images(8, (3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), seed=1)
    mm = quantize_int8(path, images, method="minmax", target="cpu", weight_rounding="nearest")
    ms = quantize_int8(path, images, method="mse", target="cpu", weight_rounding="nearest")
    assert ms.report["method"] == "mse" and json.loads({p.key: p.value for p in ms.model.metadata_props}["deployinc.int8"])["method"] == "mse"
    inside = [(ms.report["tensors"][t], r) for t, r in mm.report["tensors"].items() if t in ms.report["tensors"]]
    assert inside and all(min(r["min"], 0) - 1e-6 <= m["min"] and m["max"] <= max(r["max"], 0) + 1e-6 for m, r in inside)  # 0 is always held
    assert any(m["max"] < r["max"] for m, r in inside)  # something was cut
