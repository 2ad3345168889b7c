#!/usr/bin/env python
"""Probe deployinc with bad and hostile inputs, as a user or an attacker would give them; a regression shows.

Each case runs the real CLI (``python -m deployinc``) in a subprocess with a time limit and checks the answer:
exit 2 with an ``error:`` and a ``hint:`` line and no traceback (bad input), exit 1 (a failed check), or the
specific promise of the case (nothing imported, old files intact, exactly one writer wins, no leftovers). The
slow or privileged cases of the hardening issue live here rather than in the test suite:

- code named in a file (a planted ``module:function`` spec, ``this:x``), a file loosening its own pass mark;
- races: two ``convert`` runs to one new ``--out`` without ``--force`` (20 trials);
- a full disk: a 2 MiB tmpfs (root only; skipped otherwise) under ``convert --force`` and ``quantize --force``;
- ``kill -9`` during ``quantize``: the next run leaves no working folder behind;
- hangs: a Loop of 1e12 steps under ``verify --timeout``, and under ``verify --isolate`` without one (its default
  bound, 300 s: this case alone takes 5 minutes); ``deploy --batch`` with 3000 sizes;
- strange graphs (cycle, custom operator, int64 input, opset 6) given to verify, convert, quantize, bench;
- sizes and numbers out of range (batch 1e8, a 100000-pixel side, NaN budgets...);
- deploy: ``--force`` on a folder deploy did not write (its files must survive), ``--out .``, a 1.1 TiB batch,
  ``--input-shape`` on an ONNX file, a ``--data`` folder of unreadable images, 12 classes for a 10-class model;
- npz: saved runs and inputs with a scalar reference, object arrays, strings, a bad CRC, NaN inputs, a header
  declaring 3e12 elements (``verify --load-outputs``, ``bench --inputs``);
- labels: ``verify --labels`` files naming 3, 15 or duplicate classes for 10 outputs, a FIFO; ``train`` with an
  empty class folder; ``models --family`` unknown; ``inspect`` of hostile metadata; ``convert --fp16-io`` of an
  int64 output.

    python scripts/probe_inputs.py                  # all categories, about 10 minutes on 2 cores
    python scripts/probe_inputs.py --only races,disk

Exit status: 0 when every case answered as promised, 1 otherwise (the failing cases are listed).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "deployinc"]
MODEL = "depthwise_cifar"  # a built-in depthwise network, 32 x 32: small enough for many runs


@dataclass
class Outcome:
    category: str
    case: str
    ok: bool
    detail: str


def run(args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(CLI + args, 124, str(exc.stdout or ""), f"timed out after {timeout} s")


def clean_error(r: subprocess.CompletedProcess[str], code: int = 2) -> tuple[bool, str]:
    """Exit ``code``, one error and one hint line, no traceback."""
    tags = [ln.split(":")[0] for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    ok = r.returncode == code and tags == ["error", "hint"] and "Traceback" not in r.stdout + r.stderr
    first = next((ln for ln in r.stderr.splitlines() if ln.startswith("error:")), r.stderr.strip()[-160:])
    return ok, f"exit {r.returncode}: {first[:160]}"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "-"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".deployinc-" in p.name)


# fixtures -------------------------------------------------------------------------------------------------------------


def make_fixtures(work: Path) -> dict[str, Path]:
    import onnx
    from onnx import numpy_helper
    from PIL import Image

    base = work / "dw.onnx"
    r = run(["export", MODEL, "--out", str(base), "--exporter", "torchscript"], work)
    if r.returncode != 0:
        sys.exit(f"cannot export {MODEL}: {r.stderr[-400:]}")
    m = onnx.load(str(base))
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    mid = convs[len(convs) // 2].input[1]
    t = next(t for t in m.graph.initializer if t.name == mid)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(3.0), t.name))
    broken = work / "x3.onnx"
    onnx.save(m, str(broken))
    calib = work / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.core.test_limits import _classifier
    from tests.io.test_onnx_files import _bad_models

    strange = work / "strange"
    strange.mkdir()
    paths = _bad_models(strange)
    onnx.save(_classifier(10**12), str(work / "hang.onnx"))
    onnx.save(_classifier(None), str(work / "ref.onnx"))
    return {"base": base, "broken": broken, "calib": calib, "hang": work / "hang.onnx", "ref": work / "ref.onnx", **{f"strange:{k}": v for k, v in paths.items()}}


def edit_meta(src: Path, dst: Path, **values: object) -> Path:
    """A copy of ``src`` with deployinc metadata values replaced: JSON-encoded, or as given when a string starts
    with ``[`` (raw text, e.g. nesting deeper than a JSON parser takes)."""
    import onnx

    m = onnx.load(str(src))
    for p in m.metadata_props:
        k = p.key.removeprefix("deployinc.")
        if k in values:
            v = values[k]
            p.value = v if isinstance(v, str) and v.startswith("[") else json.dumps(v)
    onnx.save(m, str(dst))
    return dst


# categories -----------------------------------------------------------------------------------------------------------


def probe_code(work: Path, fx: dict[str, Path]) -> list[Outcome]:
    out = []
    d = work / "stranger"
    d.mkdir()
    (d / "evilmod.py").write_text("from pathlib import Path\nPath(__file__).with_name('IMPORTED').write_text('x')\ndef build(num_classes=10):\n    Path(__file__).with_name('CALLED').write_text('x')\n")
    edit_meta(fx["base"], d / "evil.onnx", model_spec="evilmod:build")
    for cmd in (["verify", "evil.onnx"], ["bench", "evil.onnx", "--backends", "torch,ort-cpu", "--iters", "3", "--warmup", "1", "--no-progress"]):
        r = run(cmd, d)
        imported = (d / "IMPORTED").exists() or (d / "CALLED").exists()
        out.append(Outcome("code", f"{cmd[0]} of a file naming evilmod:build", not imported and "Traceback" not in r.stderr, f"exit {r.returncode}, imported={imported}"))
    zen = edit_meta(fx["base"], d / "zen.onnx", model_spec="this:x")
    r = run(["verify", str(zen)], d)
    out.append(Outcome("code", "verify of a file naming this:x", "Beautiful is better" not in r.stdout + r.stderr and r.returncode == 2, f"exit {r.returncode}"))
    loose = {"max_rel": 100, "min_cosine": -1, "min_top1": 0, "min_top5": 0}
    r = run(["verify", str(edit_meta(fx["broken"], d / "loose.onnx", tolerances=loose)), "--no-localize"], d)
    out.append(Outcome("code", "a x3 fault with loosened recorded budgets", r.returncode == 1, f"exit {r.returncode} (1 = FAIL, as it must)"))
    return out


def probe_races(work: Path, fx: dict[str, Path], trials: int = 20) -> list[Outcome]:
    wins = 0
    bad = []
    for i in range(trials):
        target = work / f"race{i}.fp16.onnx"
        procs = [subprocess.Popen(CLI + ["convert", str(fx["base"]), "--out", str(target), "--no-check"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        codes = sorted(p.wait(timeout=300) for p in procs)
        if codes == [0, 2]:
            wins += 1
        else:
            bad.append(f"trial {i}: exits {codes}")
    return [Outcome("races", f"two converts to one new --out, {trials} trials", wins == trials, f"exactly one won in {wins}/{trials}" + (f"; {bad[:3]}" if bad else ""))]


@contextlib.contextmanager
def tiny_disk(size: str) -> Path:
    mnt = Path(tempfile.mkdtemp(prefix="deployinc-probe-disk-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(mnt, ignore_errors=True)
        raise PermissionError(r.stderr.strip() or "mount failed")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)


def probe_disk(work: Path, fx: dict[str, Path]) -> list[Outcome]:
    out = []
    size = fx["base"].stat().st_size
    try:
        with tiny_disk(f"{max(size * 3 // 2, 64 * 1024)}") as mnt:
            for cmd, names in (
                (["convert", str(fx["base"]), "--out", str(mnt / "m.fp16.onnx"), "--no-check", "--force"], ["m.fp16.onnx"]),
                (["quantize", str(fx["base"]), "--data", str(fx["calib"]), "--out", str(mnt / "q.int8.onnx"), "--force"], ["q.int8.onnx", "q.int8.calibration.json"]),
            ):
                for n in names:  # old outputs, then a filler that leaves the disk all but full
                    (mnt / n).write_bytes(os.urandom(size if n.endswith(".onnx") else 1000))
                free = shutil.disk_usage(mnt).free
                with contextlib.suppress(OSError):
                    (mnt / "filler").write_bytes(b"\0" * max(0, free - 16 * 1024))
                before = {n: sha(mnt / n) for n in names}
                r = run(cmd, work)
                ok, detail = clean_error(r)
                intact = {n: sha(mnt / n) for n in names} == before
                out.append(Outcome("disk", f"{cmd[0]} --force on a full disk", ok and intact and not leftovers(mnt), f"{detail}; old outputs intact={intact}; leftovers={leftovers(mnt)}"))
                for n in [*names, "filler"]:
                    (mnt / n).unlink(missing_ok=True)
    except PermissionError as exc:
        out.append(Outcome("disk", "full disk (needs root to mount a tmpfs)", True, f"skipped: {exc}"))
    return out


def probe_kill(work: Path, fx: dict[str, Path], trials: int = 4) -> list[Outcome]:
    from deployinc.io import scratch_root

    root = scratch_root()
    for i in range(trials):
        p = subprocess.Popen(CLI + ["quantize", str(fx["base"]), "--data", str(fx["calib"]), "--out", str(work / f"k{i}.int8.onnx")], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline and p.poll() is None and not [e for e in root.iterdir() if e.name.startswith("int8.")]:
            time.sleep(0.01)
        time.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
    left = [e.name for e in root.iterdir() if e.name.startswith("int8.")]
    r = run(["quantize", str(fx["base"]), "--data", str(fx["calib"]), "--out", str(work / "after.int8.onnx")], work)
    after = [e.name for e in root.iterdir() if e.name.startswith("int8.")]
    return [Outcome("kill", f"kill -9 during quantize x{trials}, then a run", r.returncode == 0 and not after, f"left by the kills: {len(left)}; after the next run: {len(after)}")]


def timed(args: list[str], cwd: Path, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.perf_counter()
    r = run(args, cwd, timeout=timeout)
    return r, time.perf_counter() - t0


def probe_hang(work: Path, fx: dict[str, Path]) -> list[Outcome]:
    out = []
    hang = ["verify", str(fx["hang"]), "--against", str(fx["ref"]), "--batch", "1", "--samples", "1", "--no-localize"]
    r, took = timed([*hang, "--timeout", "5"], work, 120)
    out.append(Outcome("hangs", "verify --timeout 5 on a Loop of 1e12 steps", r.returncode == 1 and took < 60, f"exit {r.returncode} after {took:.1f} s"))
    r, took = timed(["deploy", str(fx["base"]), "--batch", ",".join(str(b) for b in range(1, 3001)), *DEPLOY_FAST], work, 120)
    ok, detail = clean_error(r)
    out.append(Outcome("hangs", "deploy --batch 1,...,3000", ok and took < 60, f"{detail} after {took:.1f} s"))
    r, took = timed([*hang, "--isolate"], work, 420)
    out.append(Outcome("hangs", "verify --isolate (no --timeout) on a Loop of 1e12 steps", r.returncode == 1 and took < 400, f"exit {r.returncode} after {took:.1f} s"))
    return out


DEPLOY_FAST = ["--backends", "ort-cpu", "--no-compile", "--no-search", "--iters", "2", "--warmup", "1", "--samples", "2", "--precisions", "fp32"]


def class_folders(root: Path, n: int) -> Path:
    from PIL import Image

    for c in range(n):
        (root / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 20 * c, np.uint8)).save(root / f"c{c:02d}" / "0.png")
    return root


def probe_deploy(work: Path, fx: dict[str, Path]) -> list[Outcome]:
    out = []
    d = work / "deploy"
    d.mkdir()
    keep = d / "keepme"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    (keep / "photo.png").write_bytes(b"\x89PNG mine")
    before = {n: sha(keep / n) for n in ("notes.txt", "photo.png")}
    ok, detail = clean_error(run(["deploy", str(fx["base"]), "--out", str(keep), "--force", *DEPLOY_FAST], d))
    intact = {n: sha(keep / n) for n in before} == before
    out.append(Outcome("deploy", "deploy --out keepme --force (not a package)", ok and intact, f"{detail}; notes.txt, photo.png intact={intact}"))
    for where in (".", "..", "/"):
        ok, detail = clean_error(run(["deploy", str(fx["base"]), "--out", where, "--force", *DEPLOY_FAST], d))
        out.append(Outcome("deploy", f"deploy --out {where} --force", ok, detail))
    zero = d / "zero"
    zero.mkdir()
    (zero / "a.png").write_bytes(b"")
    (zero / "b.jpg").write_bytes(b"junk")
    twelve = class_folders(d / "twelve", 12)
    for args in (["--batch", "1,100000000"], ["--input-shape", "1,3,64,64"], ["--data", str(zero)], ["--accuracy-data", str(twelve)]):
        r, took = timed(["deploy", str(fx["base"]), "--out", str(d / "p.deploy"), *DEPLOY_FAST, *args], d, 300)
        ok, detail = clean_error(r)
        shown = " ".join(args).replace(str(d) + "/", "")
        out.append(Outcome("deploy", f"deploy {shown}", ok and took < 60 and not (d / "p.deploy").exists(), f"{detail} after {took:.1f} s"))
    return out


def _flip_crc(src: Path, dst: Path, member: str = "input.npy") -> Path:
    import zipfile

    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size - 5] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def probe_npz(work: Path, fx: dict[str, Path]) -> list[Outcome]:
    import io
    import zipfile

    d = work / "npz"
    d.mkdir()
    saved = d / "run.npz"
    r = run(["verify", str(fx["base"]), "--save-outputs", str(saved), "--batch", "1", "--samples", "2", "--no-fp64-floor"], d)
    if r.returncode != 0:
        return [Outcome("npz", "verify --save-outputs (the fixture)", False, f"exit {r.returncode}: {r.stderr[-160:]}")]
    with np.load(saved) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
    ref = next(k for k in arrays if k.startswith("reference/"))
    nan_x = arrays["input"].copy()
    nan_x[0, 0, 0, 0] = np.nan
    cases = {
        "scalar reference": {**arrays, ref: np.float32(1)},
        "object arrays": {**arrays, "input": np.array([None, None], dtype=object)},
        "strings": {**arrays, ref: np.array(["cat", "dog"])},
        "NaN inputs": {**arrays, "input": nan_x},
    }
    files = {}
    for name, arrs in cases.items():
        files[name] = d / f"{name.replace(' ', '_')}.npz"
        np.savez(files[name], **arrs)
    np.savez(d / "plain.npz", **arrays)
    files["bad CRC"] = _flip_crc(d / "plain.npz", d / "crc.npz")
    out = []
    for name, f in files.items():
        ok, detail = clean_error(run(["verify", str(fx["base"]), "--load-outputs", str(f), "--batch", "1"], d))
        out.append(Outcome("npz", f"verify --load-outputs: {name}", ok, detail))
    np.savez(d / "in.npz", input=arrays["input"])
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False, "shape": (3_000_000_000_000,)})
    with zipfile.ZipFile(d / "huge.npz", "w") as zf:
        zf.writestr("input.npy", hdr.getvalue() + b"\0" * 64)
    np.savez(d / "obj_in.npz", input=np.array([{"a": 1}], dtype=object))
    bench = {"bad CRC": _flip_crc(d / "in.npz", d / "crc_in.npz"), "object arrays": d / "obj_in.npz", "a header of 3e12 elements": d / "huge.npz"}
    for name, f in bench.items():
        r, took = timed(["bench", str(fx["base"]), "--inputs", str(f), "--backends", "ort-cpu", "--iters", "2", "--warmup", "1", "--no-progress"], d, 120)
        ok, detail = clean_error(r)
        out.append(Outcome("npz", f"bench --inputs: {name}", ok and took < 60, f"{detail} after {took:.1f} s"))
    return out


def probe_labels(work: Path, fx: dict[str, Path]) -> list[Outcome]:
    import onnx
    from onnx import TensorProto, helper

    out = []
    d = work / "labels"
    d.mkdir()
    val = class_folders(d / "val", 10)
    names = [f"c{i:02d}" for i in range(15)]
    for what, lines in (("3 names", names[:3]), ("15 names", names), ("a name twice", names[:9] + ["c01"])):
        f = d / f"{what.replace(' ', '_')}.txt"
        f.write_text("\n".join(lines) + "\n")
        ok, detail = clean_error(run(["verify", str(fx["base"]), "--data", str(val), "--labels", str(f), "--batch", "1"], d))
        out.append(Outcome("labels", f"verify --labels with {what} for 10 outputs", ok, detail))
    os.mkfifo(d / "fifo")
    r, took = timed(["verify", str(fx["base"]), "--data", str(val), "--labels", str(d / "fifo"), "--batch", "1"], d, 60)
    ok, detail = clean_error(r)
    out.append(Outcome("labels", "verify --labels FIFO", ok and "not a regular file" in r.stderr, detail))
    train = d / "train"
    class_folders(train, 2)
    for f in (train / "c01").iterdir():
        f.unlink()
    ok, detail = clean_error(run(["train", MODEL, "--data", str(train), "--out", str(d / "c.pt"), "--epochs", "1", "--quiet"], d))
    out.append(Outcome("labels", "train with an empty class folder", ok and not (d / "c.pt").exists(), detail))
    ok, detail = clean_error(run(["models", "--family", "nosuchfam"], d))
    out.append(Outcome("labels", "models --family nosuchfam", ok, detail))
    hostile = {"weights_sha256": 1, "versions": [1, 2], "export_path": 3.5, "model_spec": "y" * 200_000, "mean": "[" * 5000 + "]" * 5000}
    for key, value in hostile.items():
        f = edit_meta(fx["base"], d / "hostile.onnx", **{key: value})
        r = run(["inspect", str(f)], d)
        fine = r.returncode == 0 and "Traceback" not in r.stdout + r.stderr and max(map(len, r.stdout.splitlines() or [""])) <= 80
        out.append(Outcome("labels", f"inspect with deployinc.{key} = {str(value)[:12]}...", fine, f"exit {r.returncode}, {len(r.stdout)} characters"))
    m = onnx.load(str(fx["base"]))
    m.graph.node.append(helper.make_node("ArgMax", [m.graph.output[0].name], ["cls"], axis=1, keepdims=0))
    m.graph.output.append(helper.make_tensor_value_info("cls", TensorProto.INT64, ["batch"]))
    onnx.save(m, str(d / "argmax.onnx"))
    r = run(["convert", str(d / "argmax.onnx"), "--fp16-io", "--no-check", "--out", str(d / "a16.onnx")], d)
    said = next((ln for ln in r.stdout.splitlines() if ln.startswith("wrote")), r.stderr[-160:])
    out.append(Outcome("labels", "convert --fp16-io of an int64 output", r.returncode == 0 and "cls (int64)" in said, f"exit {r.returncode}: {said[:160]}"))
    return out


def probe_graphs(work: Path, fx: dict[str, Path]) -> list[Outcome]:
    out = []
    for what in ("cyclic", "custom op", "int64 input", "opset 6"):
        f = str(fx[f"strange:{what}"])
        for cmd in (
            ["verify", f, "--against", str(fx["strange:good"])],
            ["convert", f, "--out", f + ".fp16.onnx"],
            ["quantize", f, "--data", str(fx["calib"]), "--out", f + ".int8.onnx"],
            ["bench", f, "--backends", "ort-cpu", "--iters", "2", "--warmup", "1", "--no-progress"],
        ):
            ok, detail = clean_error(run(cmd, work))
            out.append(Outcome("graphs", f"{cmd[0]} of a {what} graph", ok, detail))
    return out


def probe_numbers(work: Path, fx: dict[str, Path]) -> list[Outcome]:
    f = str(fx["base"])
    cases = [
        ["verify", f, "--batch", "100000000"],
        ["verify", f, "--samples", "1000000000"],
        ["verify", f, "--max-rel", "nan"],
        ["verify", f, "--min-top1", "2"],
        ["verify", f, "--threads", "-3"],
        ["bench", f, "--batch", "100000000"],
        ["bench", f, "--max-time", "nan"],
        ["bench", f, "--iters", "1000000000000"],
        ["convert", f, "--samples", "0"],
        ["quantize", f, "--data", str(fx["calib"]), "--limit", "0"],
        ["profile", MODEL, "--input-shape", "1,3,100000,100000"],
        ["export", MODEL, "--num-classes", "2000000000"],
        ["export", MODEL, "--seed", "99999999999999999999"],
        ["export", MODEL, "--std", "inf,inf,inf"],
        ["export", MODEL, "--opset", "99"],
        ["train", MODEL, "--image-size", "100000"],
        ["train", MODEL, "--weight-decay", "-1"],
    ]
    out = []
    for cmd in cases:
        ok, detail = clean_error(run(cmd, work, timeout=120))
        out.append(Outcome("numbers", " ".join(cmd[:1] + [a for a in cmd[2:]]), ok, detail))
    dangling = work / "dangling.onnx"
    with contextlib.suppress(FileExistsError):
        dangling.symlink_to(work / "nowhere.onnx")
    ok, detail = clean_error(run(["convert", f, "--out", str(dangling), "--no-check"], work))
    out.append(Outcome("numbers", "convert to a dangling-symlink --out", ok and not (work / "nowhere.onnx").exists(), detail))
    return out


CATEGORIES: dict[str, Callable[[Path, dict[str, Path]], list[Outcome]]] = {
    "code": probe_code, "races": probe_races, "disk": probe_disk, "kill": probe_kill,
    "hangs": probe_hang, "graphs": probe_graphs, "numbers": probe_numbers, "deploy": probe_deploy, "npz": probe_npz,
    "labels": probe_labels,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help=f"comma-separated categories: {', '.join(CATEGORIES)}")
    args = ap.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(CATEGORIES)
    unknown = [c for c in chosen if c not in CATEGORIES]
    if unknown:
        ap.error(f"unknown categories {unknown}")
    work = Path(tempfile.mkdtemp(prefix="deployinc-probe-"))
    os.environ.setdefault("DEPLOYINC_CACHE_DIR", str(work / "cache"))
    try:
        fx = make_fixtures(work)
        results: list[Outcome] = []
        for c in chosen:
            t0 = time.perf_counter()
            got = CATEGORIES[c](work, fx)
            results += got
            print(f"{c}: {sum(o.ok for o in got)}/{len(got)} as promised ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(o.case) for o in results)
    for o in results:
        print(f"{'ok  ' if o.ok else 'FAIL'} {o.category:<8} {o.case:<{width}}  {o.detail}")
    bad = [o for o in results if not o.ok]
    print(f"{len(results) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
