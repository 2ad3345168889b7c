"""Conv + BatchNorm folding: the math, as a pure function on tensors.

In eval mode a BatchNorm after a convolution is an affine map per output channel ``c``::

    bn(y)_c = gamma_c * (y_c - mu_c) / sqrt(var_c + eps) + beta_c

With ``s_c = gamma_c / sqrt(var_c + eps)`` and the convolution ``y_c = W_c * x + b_c``::

    bn(conv(x))_c = (s_c W_c) * x + s_c (b_c - mu_c) + beta_c

so the pair is one convolution with ``W'_c = s_c W_c`` and ``b'_c = s_c (b_c - mu_c) + beta_c`` (``b_c = 0``
for a convolution without bias). Dimension 0 of a convolution weight is its output channel for every
``groups`` value, so grouped and depthwise convolutions fold the same way. The arithmetic runs in float64 and is
cast back, which keeps the folded model within float32 rounding of the original.
"""

from __future__ import annotations

from typing import Any


def fold_conv_bn_weights(
    conv_w: Any,
    conv_b: Any | None,
    bn_mean: Any,
    bn_var: Any,
    bn_eps: float,
    bn_weight: Any | None,
    bn_bias: Any | None,
) -> tuple[Any, Any]:
    """Return ``(W', b')`` of the convolution equivalent to conv followed by eval-mode BatchNorm.

    Args:
        conv_w: Convolution weight, out_channels x in_channels/groups x k...
        conv_b: Convolution bias (out_channels) or None.
        bn_mean: BN running mean.
        bn_var: BN running variance.
        bn_eps: BN epsilon.
        bn_weight: BN gamma (None when ``affine=False``: 1).
        bn_bias: BN beta (None when ``affine=False``: 0).
    """
    import torch

    dtype = conv_w.dtype
    w = conv_w.detach().double()
    out_ch = w.shape[0]
    b = conv_b.detach().double() if conv_b is not None else torch.zeros(out_ch, dtype=torch.float64)
    gamma = bn_weight.detach().double() if bn_weight is not None else torch.ones(out_ch, dtype=torch.float64)
    beta = bn_bias.detach().double() if bn_bias is not None else torch.zeros(out_ch, dtype=torch.float64)
    scale = gamma / torch.sqrt(bn_var.detach().double() + bn_eps)
    w_folded = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    b_folded = (b - bn_mean.detach().double()) * scale + beta
    return w_folded.to(dtype), b_folded.to(dtype)
