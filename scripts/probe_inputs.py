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
- hangs: a Loop of 1e12 steps under ``verify --timeout``;
- strange graphs (cycle, custom operator, int64 input, opset 6) given to verify, convert, quantize, bench;
- sizes and numbers out of range (batch 1e8, a 100000-pixel side, NaN budgets...).

    python scripts/probe_inputs.py                  # all categories, about 3-5 minutes on 2 cores
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
    from tests.test_bounded import _classifier
    from tests.test_front_door import _bad_models

    strange = work / "strange"
    strange.mkdir()
    paths = _bad_models(strange)
    onnx.save(_classifier(10**12), str(work / "hang.onnx"))
    onnx.save(_classifier(None), str(work / "ref.onnx"))
    return {"base": base, "broken": broken, "calib": calib, "hang": work / "hang.onnx", "ref": work / "ref.onnx", **{f"strange:{k}": v for k, v in paths.items()}}


def edit_meta(src: Path, dst: Path, **values: object) -> Path:
    import onnx

    m = onnx.load(str(src))
    for p in m.metadata_props:
        k = p.key.removeprefix("deployinc.")
        if k in values:
            p.value = json.dumps(values[k])
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


def probe_hang(work: Path, fx: dict[str, Path]) -> list[Outcome]:
    t0 = time.perf_counter()
    r = run(["verify", str(fx["hang"]), "--against", str(fx["ref"]), "--batch", "1", "--samples", "1", "--timeout", "5", "--no-localize"], work, timeout=120)
    took = time.perf_counter() - t0
    return [Outcome("hangs", "verify --timeout 5 on a Loop of 1e12 steps", r.returncode == 1 and took < 60, f"exit {r.returncode} after {took:.1f} s")]


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
    "hangs": probe_hang, "graphs": probe_graphs, "numbers": probe_numbers,
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
