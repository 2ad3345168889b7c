"""Fuzz harness for tests/test_fuzz.py: run `deployinc verify` and `deployinc check` on seeded mutations.

Runs in its own process (a native crash in ONNX Runtime kills it, and the test sees that). Prints one line per
exit code count, and "UNCAUGHT <cmd> <file>" for any exit code outside {0, 1, 2}.

    python tests/fuzz_harness.py BASE.onnx WORKDIR N SEED SECONDS
"""

from __future__ import annotations

import contextlib
import io
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["flip", "truncate", "splice", "zero"])
    b = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.randrange(len(b))]
    elif kind == "splice":
        i, j = sorted(rng.randrange(len(b)) for _ in range(2))
        b[i:j] = bytes(rng.randrange(256) for _ in range(min(64, j - i)))
    else:
        i = rng.randrange(len(b))
        b[i : i + rng.randint(1, 256)] = b"\0" * len(b[i : i + rng.randint(1, 256)])
    return bytes(b)


def mutate_proto(model: onnx.ModelProto, rng: random.Random) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    kind = rng.choice(["op", "dims", "attr", "input", "opset", "shape", "init_dtype", "external", "output", "ir"])
    node = rng.choice(g.node) if g.node else None
    if kind == "op" and node is not None:
        node.op_type = rng.choice(["Conv", "NoSuchOp", "Relu", "Gemm", "Concat", "MatMul", "", "LSTM"])
    elif kind == "dims" and g.initializer:
        t = rng.choice(g.initializer)
        arr = numpy_helper.to_array(t).reshape(-1)
        shape = [rng.choice([0, 1, 2, 3, 7, 1 << 20]) for _ in range(rng.randint(0, 4))]
        del t.dims[:]
        t.dims.extend(shape)
        if rng.random() < 0.5:
            t.raw_data = arr[: max(0, arr.size // 2)].tobytes()
    elif kind == "attr" and node is not None and node.attribute:
        a = rng.choice(node.attribute)
        if a.ints:
            a.ints[rng.randrange(len(a.ints))] = rng.choice([-1, 0, 1000000, 3])
        elif a.type == onnx.AttributeProto.INT:
            a.i = rng.choice([-5, 0, 99999])
        else:
            a.name = "bogus"
    elif kind == "input" and node is not None and node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(["", "missing_tensor", g.input[0].name])
    elif kind == "opset":
        m.opset_import[0].version = rng.choice([1, 5, 12, 99, 0])
    elif kind == "shape":
        dims = g.input[0].type.tensor_type.shape.dim
        if dims:
            d = dims[rng.randrange(len(dims))]
            d.dim_value = rng.choice([0, 1, 5, 4096])
    elif kind == "init_dtype" and g.initializer:
        rng.choice(g.initializer).data_type = rng.choice([1, 2, 7, 10, 11, 16, 99])
    elif kind == "external" and g.initializer:
        t = rng.choice(g.initializer)
        t.data_location = onnx.TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", rng.choice(["/etc/passwd", "../x.bin", "missing.data", "m.onnx"])
    elif kind == "output":
        g.output[0].name = rng.choice(["", "nope", g.input[0].name])
    else:
        m.ir_version = rng.choice([0, 1, 3, 99])
    return m.SerializeToString()


def main() -> None:
    base, work, n, seed, seconds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    from deployinc.cli.main import cli

    rng = random.Random(seed)
    data = base.read_bytes()
    model = onnx.load_model_from_string(data)
    counts: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds
    done = 0
    for i in range(n):
        if time.perf_counter() > deadline:
            break
        blob = mutate_bytes(data, rng) if i % 2 == 0 else mutate_proto(model, rng)
        f = work / f"m{i % 4}.onnx"
        f.write_bytes(blob)
        for cmd in (["verify", str(f), "--against", str(base), "--batch", "1", "--no-localize"], ["check", str(f), "--target", "ort-cpu"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                code = cli.main(args=cmd, standalone_mode=False)
            counts[f"{cmd[0]}:{code}"] += 1
            if code not in (0, 1, 2):
                print(f"UNCAUGHT {cmd[0]} mutation {i}: exit {code}: {err.getvalue()[-400:]!r}")
        done += 1
    for k, v in sorted(counts.items()):
        print(f"COUNT {k} {v}")
    print(f"DONE {done}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
