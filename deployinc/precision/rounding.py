"""Error-compensating weight rounding for int8 (GPTQ/OPTQ): the same int8 grid, better chosen values on it.

Rounding each weight to its nearest int8 step is what a quantizer does by default. It minimises the error of every
weight alone, not of the layer's output: on a random-weight googlenet, the weights alone rounded to per-channel int8
(activations left float) already cost a worst-image cosine of 0.9931, about half of what the whole int8 file
loses. GPTQ (Frantar et al., 2022, "OPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"; the method the ``auto-gptq`` and NNCF weight compressors use) rounds the columns of a layer's weight
matrix one at a time and moves each column's rounding error onto the columns not yet rounded, weighted by the
inverse of ``H = X X^T``, the second moment of the layer's inputs ``X`` on the calibration images. The result sits
on exactly the grid the quantizer chose (its scales and zero points are kept), so the runtime's int8 kernels and
the file's size do not change; only which step each weight takes does.

Here: a Conv's weight is ``[out, in x kh x kw]`` (its inputs unfolded, strides, pads and dilations as the node
says), a Gemm's or MatMul's ``[out, in]``. Grouped and depthwise convolutions keep nearest rounding (a depthwise
column has nine inputs: nothing to spread the error over). ``H`` comes from the float model's own activations, at
most :data:`MAX_COLUMNS` sampled input columns per batch, damped by :data:`DAMP` of its mean diagonal.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..core.graph import node_attrs
from ..errors import BadInputError
from ._common import batches, cpu_session

#: What ``weight_rounding`` takes.
ROUNDINGS = ("gptq", "nearest")
#: Input columns sampled per calibration batch and layer (a 112 x 112 feature map has 12,544 per image).
MAX_COLUMNS = 4096
#: Damping of H: this share of its mean diagonal is added to the diagonal (GPTQ's default).
DAMP = 0.01
#: Round the columns whose inputs carry the most energy first (GPTQ's "act-order"), so the error of the columns
#: that matter most is spread over the most columns left.
ACT_ORDER = True
#: Columns rounded between two updates of the rest of the matrix (GPTQ's lazy batch).
BLOCK = 128
#: Layers whose unfolded input is wider than this keep nearest rounding (H would be too large to invert quickly).
MAX_WIDTH = 8192
#: A layer seen in fewer input columns than this many times its width keeps nearest rounding: H from too few
#: columns is mostly damping (resnet50's last stage sees 49 positions per image for a width of 4,608).
MIN_COLUMNS_PER_WIDTH = 1.0


def check_rounding(value: str) -> None:
    if value not in ROUNDINGS:
        raise BadInputError(f"unknown --weight-rounding value {value!r}", hint=f"use one of {', '.join(ROUNDINGS)}")


def _columns(x: Any, node: Any, kernel: tuple[int, ...], rng: np.random.Generator) -> Any:
    """The layer's input unfolded to ``[D, samples]`` columns (torch tensor), sampled to :data:`MAX_COLUMNS`."""
    import torch

    a = node_attrs(node)
    if node.op_type == "Conv":
        t = torch.from_numpy(np.ascontiguousarray(x))
        if t.ndim != 4:
            return None
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            return None  # SAME_* padding: left to nearest rounding rather than guessed
        t = torch.nn.functional.pad(t, (pads[1], pads[3], pads[0], pads[2]))
        cols = torch.nn.functional.unfold(t, tuple(kernel), dilation=tuple(a.get("dilations", [1, 1])), stride=tuple(a.get("strides", [1, 1])))
        cols = cols.permute(1, 0, 2).reshape(cols.shape[1], -1)
    else:
        t = torch.from_numpy(np.ascontiguousarray(x))
        cols = t.reshape(-1, t.shape[-1]).T
    if cols.shape[1] > MAX_COLUMNS:
        cols = cols[:, torch.from_numpy(rng.choice(cols.shape[1], MAX_COLUMNS, replace=False))]
    return cols.float()  # H is summed in float32 (half the memory of a model's Hessians) and solved in float64


def gptq_round(w: np.ndarray, h: np.ndarray, scale: np.ndarray, zero: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Integer steps for ``w`` (``[out, D]``) on the grid ``(q - zero) * scale`` (``scale``/``zero`` per row),
    ``lo <= q <= hi``, chosen column by column so that ``w @ X`` moves least for inputs of second moment ``h``."""
    import torch

    W = torch.from_numpy(w.astype(np.float64)).clone()
    H = torch.from_numpy(h.astype(np.float64)).clone()
    d = W.shape[1]
    dead = torch.diag(H) <= 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    order = torch.argsort(torch.diag(H), descending=True) if ACT_ORDER else torch.arange(d)
    W, H = W[:, order], H[order][:, order]  # the columns with the largest inputs first (GPTQ's act-order)
    H += DAMP * torch.mean(torch.diag(H)) * torch.eye(d, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    s = torch.from_numpy(scale.astype(np.float64))
    z = torch.from_numpy(zero.astype(np.float64))
    Q = torch.zeros_like(W)
    for i1 in range(0, d, BLOCK):
        i2 = min(i1 + BLOCK, d)
        W1, E1, U1 = W[:, i1:i2].clone(), torch.zeros(W.shape[0], i2 - i1, dtype=W.dtype), U[i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = W1[:, j]
            q = torch.clamp(torch.round(col / s) + z, lo, hi)
            Q[:, i1 + j] = q
            err = (col - (q - z) * s) / U1[j, j]
            W1[:, j:] -= err[:, None] * U1[j, j:][None, :]
            E1[:, j] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return Q[:, torch.argsort(order)].numpy()


def _weight_layers(qmodel: Any) -> list[dict[str, Any]]:
    """Each Conv/Gemm/MatMul of the QDQ model whose weight is a quantized initializer: the node, the weight's
    DequantizeLinear and its initializers."""
    inits = {t.name: t for t in qmodel.graph.initializer}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    out = []
    for n in qmodel.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2 or not n.name:
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
            continue
        if n.op_type == "Conv" and int(node_attrs(n).get("group", 1)) != 1:
            continue
        if n.op_type == "Gemm" and (int(node_attrs(n).get("transA", 0)) or not int(node_attrs(n).get("transB", 0))):
            continue  # only y = x W^T: the weight's rows are the outputs
        out.append({"node": n, "dq": dq, "q": inits[dq.input[0]], "scale": inits[dq.input[1]],
                    "zero": inits.get(dq.input[2]) if len(dq.input) > 2 else None, "axis": int(node_attrs(dq).get("axis", 1))})  # fmt: skip
    return out


def _per_output(layer: dict[str, Any], ndim: int) -> bool:
    """Whether the weight's scales are one per tensor or one per output (the rows GPTQ rounds), not per another axis."""
    size = int(np.prod(layer["scale"].dims)) if len(layer["scale"].dims) else 1
    out_axis = 1 if layer["node"].op_type == "MatMul" else 0
    return size == 1 or layer["axis"] % ndim == out_axis


def _as_rows(q: np.ndarray, op_type: str) -> np.ndarray:
    """A weight as ``[out, D]``: Conv ``[out, in, kh, kw]``, Gemm (transB) ``[out, in]``, MatMul ``[in, out]``."""
    return q.T if op_type == "MatMul" else q.reshape(q.shape[0], -1)


def _from_rows(rows: np.ndarray, shape: tuple[int, ...], op_type: str) -> np.ndarray:
    return rows.T.reshape(shape) if op_type == "MatMul" else rows.reshape(shape)


def apply_gptq(qmodel: Any, fp32: Any, images: np.ndarray, input_name: str, batch: int, *, seed: int = 0) -> dict[str, Any]:
    """Re-round the int8 weights of ``qmodel`` (in place) by :func:`gptq_round`, with ``H`` from ``fp32``'s own
    activations on ``images``; a layer is matched to ``fp32`` by node name, and any layer that does not match
    (name, weight shape) keeps its rounding. Returns what was done, for the report."""
    import onnx
    import torch
    from onnx import numpy_helper

    t0 = time.perf_counter()
    layers = _weight_layers(qmodel)
    f_nodes = {n.name: n for n in fp32.graph.node if n.name}
    f_inits = {t.name: t for t in fp32.graph.initializer}
    todo = []
    for L in layers:
        f = f_nodes.get(L["node"].name)
        if f is None or f.op_type != L["node"].op_type or len(f.input) < 2 or f.input[1] not in f_inits:
            continue
        w = numpy_helper.to_array(f_inits[f.input[1]])
        if tuple(w.shape) != tuple(L["q"].dims) or (L["node"].op_type != "Conv" and w.ndim != 2):
            continue
        if _as_rows(w, f.op_type).shape[1] > MAX_WIDTH or not _per_output(L, w.ndim):
            continue
        todo.append({**L, "fp32_node": f, "w": w})
    if not todo:
        return {"weight_rounding": "gptq", "layers": 0, "seconds": round(time.perf_counter() - t0, 1)}
    probe = onnx.ModelProto()
    probe.CopyFrom(fp32)
    have = {o.name for o in probe.graph.output}
    for name in sorted({L["fp32_node"].input[0] for L in todo} - have):
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = cpu_session(probe)
    names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(seed)
    hs: dict[str, Any] = {}
    seen: dict[str, int] = {}
    with torch.no_grad():
        for chunk in batches(images, batch):
            acts = dict(zip(names, sess.run(None, {input_name: chunk})))
            for L in todo:
                cols = _columns(acts[L["fp32_node"].input[0]], L["fp32_node"], tuple(L["w"].shape[2:]), rng)
                if cols is not None and cols.shape[0] == _as_rows(L["w"], L["node"].op_type).shape[1]:
                    hs[L["node"].name] = hs.get(L["node"].name, 0) + cols @ cols.T
                    seen[L["node"].name] = seen.get(L["node"].name, 0) + int(cols.shape[1])
    done = 0
    for L in todo:
        h = hs.get(L["node"].name)
        if h is None or seen[L["node"].name] < MIN_COLUMNS_PER_WIDTH * h.shape[0]:
            continue
        q_old = numpy_helper.to_array(L["q"])
        rows = _as_rows(q_old, L["node"].op_type)
        scale = numpy_helper.to_array(L["scale"]).astype(np.float64).reshape(-1)
        zero = numpy_helper.to_array(L["zero"]).astype(np.float64).reshape(-1) if L["zero"] is not None else np.zeros(1)
        bound = int(np.abs(q_old.astype(np.int64)).max())  # the quantizer's own range (127, or 64 with reduce_range)
        lo, hi = (-bound, bound) if q_old.dtype == np.int8 else (0, int(np.iinfo(q_old.dtype).max))
        new = gptq_round(_as_rows(L["w"], L["node"].op_type), h.numpy(), np.broadcast_to(scale, rows.shape[0]).copy(),
                         np.broadcast_to(zero, rows.shape[0]).copy(), lo, hi)  # fmt: skip
        L["q"].CopyFrom(numpy_helper.from_array(_from_rows(new, q_old.shape, L["node"].op_type).astype(q_old.dtype), L["q"].name))
        done += 1
    return {"weight_rounding": "gptq", "layers": done, "of": len(layers), "seconds": round(time.perf_counter() - t0, 1)}
