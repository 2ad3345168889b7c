#!/usr/bin/env python
"""Export and verify every model of a zoo with no flags; write docs/zoo-sweep.md (and .json).

A thin driver over the real CLI: for each model it runs ``deployinc export NAME`` and then ``deployinc verify
NAME.onnx``, each in its own process with a time limit, so a crash or a hang costs one row, not the sweep. The only
arguments added are where files go (``--out``, ``--json``) and ``--force`` (a resumed model starts fresh).

    python scripts/sweep_zoo.py --set torchvision                      # every torchvision classifier <= 100M params
    python scripts/sweep_zoo.py --set timm                             # the curated timm list (TIMM_MODELS)
    python scripts/sweep_zoo.py --set all --plant                      # both, plus a planted fault per model
    python scripts/sweep_zoo.py --models resnet18,timm/lcnet_050 --work /tmp/sweep --out-md /tmp/sweep/zoo.md
    python scripts/sweep_zoo.py --work /tmp/sweep --report-only        # rewrite the report from the state
    python scripts/sweep_zoo.py --set timm --list                      # print the selection and stop

Per model it records the path taken (exporter, opset, any fallback: from the file's provenance metadata and the
export's log lines), the node count, export and verify seconds, the verdict, max_rel, the float32 noise floor when
verify reports one, the peak memory of the child processes (ru_maxrss) and the one-line error. Verdicts:

    PASS / FAIL          verify exited 0 / 1
    inconclusive         verify exited 3: what ran passed, but the reference ignores its input (or a backend did not run)
    export-error         export exited non-zero (1 check failed, 2 bad input, 70 internal error)
    verify-error         verify exited 2 (bad input) or 70 (internal error)
    timeout              the model ran past --timeout (its processes are killed)
    crash                a process died of a signal (segfault, OOM killer) or exited with an unexpected code

Resuming: each finished model is appended to ``<work>/state.jsonl``; a killed sweep started again with the same
``--work`` skips those models (``--redo`` runs them again). The Markdown and JSON are rewritten from the state at
the end, atomically.

``--plant`` also scales the weights of the middle Conv of each exported graph by 1.1, verifies that copy (expected:
exit 1) and records which module verify's localisation names first, next to the planted node and its scope.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from deployinc.core import env
from deployinc.core import progress as core_progress
from deployinc.core.table import Table
from deployinc.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORK = ROOT / "build" / "zoo-sweep"
DEFAULT_MD = ROOT / "docs" / "zoo-sweep.md"
DEFAULT_JSON = ROOT / "docs" / "zoo-sweep.json"
DEFAULT_TIMEOUT = 900.0
DEFAULT_MAX_PARAMS = 100e6
PLANT_SCALE = 1.1
EXIT_LABELS = {0: "pass", 1: "fail", 2: "bad input", 3: "inconclusive or incomplete", 70: "internal error", 130: "interrupted"}
VERDICTS = ("PASS", "FAIL", "inconclusive", "export-error", "verify-error", "timeout", "crash")
#: A ``|`` inside a Markdown cell, escaped.
_PIPE = "\\|"

#: family -> timm model names: small enough for a 2-core CPU sweep, every one in timm 1.0.31's list_models().
TIMM_MODELS: dict[str, list[str]] = {
    "inception": ["inception_v3", "inception_v4", "inception_resnet_v2"],
    "xception": ["xception41", "legacy_xception"],
    "resnet-d": ["resnet18d", "resnet26d"],
    "resnext": ["resnext26ts", "seresnext26d_32x4d"],
    "resnest": ["resnest14d"],
    "res2net": ["res2net50_14w_8s"],
    "sknet": ["skresnet18"],
    "efficientnet": ["efficientnet_b0", "efficientnet_lite0", "tf_efficientnetv2_b0"],
    "mobilenet": ["mobilenetv2_050", "mobilenetv3_large_100", "mobilenetv3_small_050", "mobilenetv4_conv_small"],
    "mixnet": ["mixnet_s"],
    "fbnet": ["fbnetc_100"],
    "mnasnet": ["mnasnet_100", "hardcorenas_a"],
    "lcnet": ["lcnet_050"],
    "ghostnet": ["ghostnet_100"],
    "rexnet": ["rexnet_100"],
    "tinynet": ["tinynet_e"],
    "regnet": ["regnetx_002", "regnety_002"],
    "dla": ["dla34", "dla46_c"],
    "dpn": ["dpn48b"],
    "hrnet": ["hrnet_w18_small"],
    "cspnet": ["cspresnet50", "cs3darknet_s"],
    "vovnet": ["ese_vovnet19b_dw"],
    "repvgg": ["repvgg_a0"],
    "mobileone": ["mobileone_s0"],
    "convnext": ["convnext_atto", "convnext_nano"],
    "nfnet": ["nf_resnet26", "eca_nfnet_l0"],
    "densenet": ["densenet121"],
    "hgnet": ["hgnetv2_b0"],
    "mobilevit": ["mobilevit_xxs"],
    "fastvit": ["fastvit_t8"],
    "levit": ["levit_128s"],
    "vit": ["vit_tiny_patch16_224", "deit_tiny_patch16_224"],
    "efficientformer": ["efficientformerv2_s0"],
    "edgenext": ["edgenext_xx_small"],
    "repvit": ["repvit_m0_9"],
    "efficientvit": ["efficientvit_m0"],
}


# model lists ------------------------------------------------------------------------------------------------------


def torchvision_params(name: str) -> int | None:
    """Parameter count from the first weights enum's metadata; else counted on the meta device (no memory)."""
    import torchvision.models as tvm

    with contextlib.suppress(Exception):
        return int(list(tvm.get_model_weights(name))[0].meta["num_params"])
    import torch

    try:
        with torch.device("meta"):
            return sum(p.numel() for p in tvm.get_model(name).parameters())
    except Exception:  # noqa: BLE001 - unknown count: the model is kept and the row says so
        return None


def timm_params(name: str) -> int | None:
    import timm
    import torch

    try:
        with torch.device("meta"):
            return sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
    except Exception:  # noqa: BLE001 - a model that cannot be built on the meta device has no parameter count; the sweep still runs it
        return None


def param_count(spec: str) -> int | None:
    if spec.startswith("timm/"):
        return timm_params(spec[len("timm/") :])
    if ":" in spec:
        return None
    return torchvision_params(spec)


def torchvision_set(max_params: float) -> list[str]:
    import torchvision.models as tvm

    names = tvm.list_models(module=tvm)
    return [n for n in names if (torchvision_params(n) or 0) <= max_params]


def timm_set() -> list[str]:
    import timm

    available = set(timm.list_models())
    names = [n for family in TIMM_MODELS.values() for n in family]
    missing = [n for n in names if n not in available]
    if missing:
        print(f"warning: not in timm {timm.__version__}, left out: {', '.join(missing)}", file=sys.stderr)
    return [f"timm/{n}" for n in names if n in available]


def select_models(set_name: str | None, models: str | None, max_params: float) -> list[str]:
    """The specs to sweep, in order: an explicit --models list, else --set (torchvision, timm, all)."""
    if models:
        return list(dict.fromkeys(m.strip() for m in models.split(",") if m.strip()))
    out: list[str] = []
    if set_name in ("torchvision", "all"):
        out += torchvision_set(max_params)
    if set_name in ("timm", "all"):
        out += timm_set()
    return out


def family_of(spec: str) -> str:
    if spec.startswith("timm/"):
        name = spec[len("timm/") :]
        return next((f"timm/{f}" for f, names in TIMM_MODELS.items() if name in names), "timm")
    return "torchvision" if ":" not in spec else "user"


# one child process ------------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    """How one child process ended."""

    rc: int | None  # exit code; None when it was killed for the time limit
    seconds: float
    maxrss_mb: float | None
    timed_out: bool = False
    signal: str | None = None
    log: str = ""  # stdout + stderr


def _die_with_parent(parent: int) -> Callable[[], None]:
    """preexec_fn: the child (and its group) gets SIGKILL if this driver dies, so a killed sweep leaves no orphans."""

    def setup() -> None:
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(137)

    return setup


def run_step(cmd: list[str], cwd: Path, timeout: float, log_path: Path, tick: Callable[[], None] | None = None) -> StepResult:
    """Run ``cmd`` in its own session with a wall-clock limit; peak RSS from ``wait4``; output to ``log_path``."""
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
        )
        status, usage, timed_out, reaped = 0, None, False, False
        try:
            while not reaped:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                reaped = pid != 0
                if not reaped and time.perf_counter() - t0 > timeout:
                    timed_out = True
                    break
                if not reaped:
                    if tick:
                        tick()
                    time.sleep(0.25)
        finally:
            # Past the time limit, or the driver interrupted: end the child's whole session. Also after a normal
            # exit, for anything it left running in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if not reaped:
                _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    rc = proc.returncode
    sig = signal.Signals(-rc).name if rc is not None and rc < 0 else None
    text = log_path.read_text(errors="replace")
    return StepResult(None if timed_out else rc, seconds, usage.ru_maxrss / 1024 if usage else None, timed_out, sig, text)


def error_line(step: StepResult) -> str:
    """The one line that says what went wrong: the exception of a traceback, else the last ``error:`` line."""
    if step.timed_out:
        return f"timed out after {step.seconds:.0f} s"
    lines = [ln.rstrip() for ln in step.log.splitlines() if ln.strip()]
    errors = [ln[len("error:") :].strip() for ln in lines if ln.startswith("error:")]
    tb = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if tb and (not errors or "internal error" in errors[-1]):
        exc = next((ln for ln in lines[tb[-1] + 1 :] if not ln.startswith(" ")), None)
        if exc:
            return exc[:300]
    if errors:
        return errors[-1][:300]
    if step.signal:
        return f"killed by {step.signal}"
    return (lines[-1] if lines else f"exit {step.rc}")[:300]


def deployinc_cmd(*args: str) -> list[str]:
    """The real CLI (``python -m deployinc`` is the ``deployinc`` entry point of this interpreter's install)."""
    return [sys.executable, "-m", "deployinc", *args]


# reading what the CLI wrote ---------------------------------------------------------------------------------------

_WROTE = re.compile(r"^wrote (?P<path>.+?) \(opset (?P<opset>\d+), (?P<exporter>[^,]+), (?P<batch>\w+) batch\) in (?P<s>[\d.]+) s$")
_FALLBACK = re.compile(r"fall(?:ing|s)? ?back|fallback", re.I)


def read_export(onnx_path: Path, log: str) -> dict[str, Any]:
    """Exporter, opset, the path taken (any fallback), node count and the pipeline's own seconds.

    From the file's provenance (optional fields read defensively: files and libraries from before fallbacks were
    recorded lack them) and the export's log lines.
    """
    import onnx

    from deployinc.metadata import PREFIX, read_provenance

    out: dict[str, Any] = {}
    for ln in log.splitlines():
        m = _WROTE.match(ln.strip())
        if m:
            out.update(opset=int(m["opset"]), exporter=m["exporter"].split()[0], pipeline_s=float(m["s"]))
        elif ln.startswith("quick check"):
            out["quick_check"] = ln.split(": ", 1)[-1].strip()
    model = onnx.load(str(onnx_path), load_external_data=False)
    out["nodes"] = len(model.graph.node)
    out["file_opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    prov = read_provenance(model)
    raw = {p.key[len(PREFIX) :]: _json_or_str(p.value) for p in model.metadata_props if p.key.startswith(PREFIX)}

    def prov_field(name: str) -> Any:
        value = getattr(prov, name, None) if prov is not None else None
        return value if value not in (None, "", [], {}) else raw.get(name)

    out["exporter"] = prov_field("exporter") or out.get("exporter")
    out["opset"] = prov_field("opset") or out.get("opset")
    out["passes"] = list(prov_field("passes") or [])
    attempts = [a for a in (prov_field("export_path") or []) if isinstance(a, dict)]
    out["export_path"] = attempts or None
    out["path"] = " -> ".join(f"{a.get('exporter')}@{a.get('opset')}" + (" x" if a.get("error") else "") for a in attempts) \
        or f"{out.get('exporter')}@{out.get('opset')}"
    notes = [ln.strip() for ln in log.splitlines() if _FALLBACK.search(ln) and not ln.startswith(("$ ", "wrote "))]
    fallback = prov_field("fallback")
    out["fallback"] = (_short(fallback) if fallback else "; ".join(notes)[:300]) or None
    out["opset_pinned"] = prov_field("opset_pinned")
    return out


def _json_or_str(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def _short(value: Any, limit: int = 200) -> str:
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    return text[:limit]


def _num(v: Any) -> float | None:
    try:
        return float(v)  # the report writes non-finite floats as "inf" / "nan"
    except (TypeError, ValueError):
        return None


def _find_keys(obj: Any, pattern: re.Pattern[str], path: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}" if path else str(k)
            if pattern.search(str(k)):
                found.append((here, v))
            else:
                found += _find_keys(v, pattern, here)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _find_keys(v, pattern, f"{path}[{i}]")
    return found


_FLOOR = re.compile(r"noise|floor|fp64|float64", re.I)
NOT_NEEDED = "not needed (within the preset)"


def read_floor(rep: dict[str, Any]) -> dict[str, Any]:
    """verify's torch fp32-vs-fp64 floor: ``noise_floor`` (status, max_rel per output), else any key that looks like it."""
    nf = rep.get("noise_floor")
    if "noise_floor" in rep and nf is None:  # verify measures the floor only for a backend over the preset
        return {"noise_floor": None, "floor_status": NOT_NEEDED}
    if isinstance(nf, dict):
        rels = [n for n in (_num(v) for v in (nf.get("max_rel") or {}).values()) if n is not None]
        return {"noise_floor": max(rels) if rels else None, "floor_status": nf.get("status"), "floor_reason": nf.get("reason")}
    found = _find_keys(rep.get("backends", []), _FLOOR) or _find_keys(rep, _FLOOR)
    if not found:
        return {}
    where, value = found[0]
    nums = [n for n in (_num(v) for _, v in _find_keys({"v": value}, re.compile("."))) if n is not None]
    return {"noise_floor": _num(value) if _num(value) is not None else (max(nums) if nums else None),
            "floor_status": f"from {where}"}


def read_verify(json_path: Path) -> dict[str, Any]:
    """max_rel over every backend, batch and output; its budget; the fp32 noise floor if reported; the localisation."""
    if not json_path.is_file():
        return {}
    rep = json.loads(json_path.read_text())
    ran = [b for b in rep.get("backends", []) if b.get("status") != "skipped"]
    rels = [_num(o.get("max_rel")) for b in ran for r in b.get("results", []) for o in r.get("outputs", [])]
    rels = [r for r in rels if r is not None]
    budgets = [_num((b.get("tolerance") or {}).get("max_rel")) for b in ran]
    out: dict[str, Any] = {"verify_verdict": rep.get("verdict"), "max_rel": max(rels) if rels else None,
                           "budget": min((b for b in budgets if b is not None), default=None)}
    out.update(read_floor(rep))
    loc = rep.get("localization") or {}
    first = loc.get("first") or {}
    if loc:
        out["localized"] = first.get("module") or first.get("label")
        out["localized_node"] = first.get("onnx_node")
        out["localization"] = loc.get("summary")
    fails = rep.get("failures") or []
    out["failure"] = fails[0] if fails else None
    return out


# the planted fault ------------------------------------------------------------------------------------------------


#: Below this largest magnitude a multiplier mutes what it multiplies: a BatchNorm with gamma 0 (timm's
#: zero_init_last, folded into its Conv as all-zero weights) or a layer scale of 1e-6 (ConvNeXt).
MUTED = 1e-4
_PASS_THROUGH = ("Identity", "Reshape", "Unsqueeze", "Squeeze", "Cast", "Flatten")


def _constants(model: Any) -> dict[str, float]:
    """Largest |value| of every constant tensor (initializers, Constant nodes, reshapes of those)."""
    from onnx import numpy_helper

    big: dict[str, float] = {}
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        big[t.name] = float(abs(a).max()) if a.size and a.dtype.kind in "fiu" else 1.0
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].type == 4:  # TENSOR
            a = numpy_helper.to_array(n.attribute[0].t)
            big[n.output[0]] = float(abs(a).max()) if a.size and a.dtype.kind in "fiu" else 1.0
        elif n.op_type in _PASS_THROUGH and n.input and n.input[0] in big:
            big[n.output[0]] = big[n.input[0]]
    return big


def live_values(model: Any) -> set[str]:
    """Values that reach a graph output through something other than a muting multiplier (see :data:`MUTED`)."""
    big = _constants(model)
    live = {o.name for o in model.graph.output}
    for n in reversed(list(model.graph.node)):  # ONNX nodes are stored in topological order
        if not any(o in live for o in n.output):
            continue
        for i, name in enumerate(n.input):
            others = [v for j, v in enumerate(n.input) if j != i and v]
            muted = (
                (n.op_type == "Conv" and i == 0 and big.get(n.input[1], 1.0) < MUTED)
                or (n.op_type == "BatchNormalization" and i == 0 and big.get(n.input[1], 1.0) < MUTED)
                or (n.op_type == "Mul" and any(big.get(v, 1.0) < MUTED for v in others))
            )
            if name and not muted:
                live.add(name)
    return live


def plant_fault(onnx_path: Path, out_path: Path, scale: float = PLANT_SCALE) -> dict[str, Any]:
    """Scale the weights of the middle live Conv of the graph by ``scale``; write the copy to ``out_path``.

    Live: its output reaches the logits (a residual branch muted by a zero-initialised BatchNorm, or a layer scale
    of 1e-6, does not, and a fault there changes nothing, so it cannot be a test of verify).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits]
    live = live_values(model)
    usable = [n for n in convs if n.output[0] in live and float(abs(numpy_helper.to_array(inits[n.input[1]])).max()) >= MUTED]
    if not usable:
        raise ValueError(f"no live Conv with an initializer weight ({len(convs)} Conv nodes)")
    node = usable[len(usable) // 2]
    weight = inits[node.input[1]]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * scale, weight.name))
    meta = {p.key: p.value for p in node.metadata_props}
    onnx.save(model, str(out_path))
    wname = node.input[1]
    return {
        "node": node.name,
        "index": f"{usable.index(node) + 1}/{len(usable)} live Conv ({len(convs)} in all)",
        "weight": wname,
        "scope": wname[: -len(".weight")] if wname.endswith(".weight") else meta.get("pkg.torch.onnx.name_scopes"),
    }


def _same_place(localized: str | None, scope: str | None) -> str:
    """exact, parent (same enclosing module: a folded BN is reported for its conv), or no."""
    if not localized or not scope:
        return "no"
    if localized == scope:
        return "exact"
    lp, sp = localized.rpartition(".")[0], scope.rpartition(".")[0]
    return "parent" if (lp == sp or localized == sp or scope.startswith(localized + ".")) else "no"


# one model --------------------------------------------------------------------------------------------------------


def model_dir(work: Path, spec: str) -> Path:
    return work / "runs" / re.sub(r"[^A-Za-z0-9_.-]+", "__", spec)


def sweep_one(spec: str, work: Path, timeout: float, plant: bool, tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export then verify ``spec`` (then the planted copy): one row. Never raises for a model's failure."""
    d = model_dir(work, spec)
    d.mkdir(parents=True, exist_ok=True)
    onnx_path, vjson = d / "model.onnx", d / "verify.json"
    for stale in ("model.onnx", "model.onnx.data", "verify.json", "planted.onnx", "planted.verify.json"):
        (d / stale).unlink(missing_ok=True)  # from a run killed half-way: never read as this run's
    row: dict[str, Any] = {"model": spec, "family": family_of(spec), "dir": str(d), "started": _now()}
    deadline = time.perf_counter() + timeout

    def step(name: str, cmd: list[str]) -> StepResult:
        if tick:
            tick(name)
        left = max(1.0, deadline - time.perf_counter())
        r = run_step(cmd, d, left, d / f"{name}.log", tick=(lambda: tick(name)) if tick else None)
        row[f"{name}_rc"], row[f"{name}_s"], row[f"{name}_mb"] = r.rc, round(r.seconds, 2), _round(r.maxrss_mb, 1)
        return r

    ex = step("export", deployinc_cmd("export", spec, "--out", str(onnx_path), "--force"))
    if ex.rc == 0 or (ex.rc == 1 and onnx_path.is_file()):
        with contextlib.suppress(Exception):
            row.update(read_export(onnx_path, ex.log))
    if ex.rc != 0:
        row.update(verdict=_bad_verdict(ex, "export-error"), error=error_line(ex))
        if not (ex.rc == 1 and onnx_path.is_file()):  # a quick-check failure leaves a file: verify it anyway
            return _finish(row)
    vr = step("verify", deployinc_cmd("verify", str(onnx_path), "--json", str(vjson), "--force"))
    row.update(read_verify(vjson))
    if "verdict" not in row:
        if vr.rc in (0, 1):
            row["verdict"] = "PASS" if vr.rc == 0 else "FAIL"
            row["error"] = None if vr.rc == 0 else (row.get("failure") or error_line(vr))
        elif vr.rc == 3 and not vr.timed_out:  # what ran passed, but proves nothing (or a backend did not run)
            row.update(verdict="inconclusive", error=error_line(vr))
        else:
            row.update(verdict=_bad_verdict(vr, "verify-error"), error=error_line(vr))
    if plant and onnx_path.is_file() and not vr.timed_out:
        row["plant"] = plant_one(onnx_path, d, step)
    return _finish(row)


def plant_one(onnx_path: Path, d: Path, step: Callable[[str, list[str]], StepResult]) -> dict[str, Any]:
    """Plant a fault in a copy, verify it, and say whether it was caught (exit 1) and where it was localised."""
    planted, pjson = d / "planted.onnx", d / "planted.verify.json"
    try:
        info = plant_fault(onnx_path, planted)
    except Exception as exc:  # noqa: BLE001 - a graph without a plantable Conv
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    r = step("plant", deployinc_cmd("verify", str(planted), "--json", str(pjson), "--force"))
    got = read_verify(pjson)
    info.update(
        rc=r.rc, caught=r.rc == 1, seconds=round(r.seconds, 2), localized=got.get("localized"),
        localized_node=got.get("localized_node"), max_rel=got.get("max_rel"),
        match=_same_place(got.get("localized"), info.get("scope")),
    )
    if r.rc not in (0, 1):
        info["error"] = error_line(r)
    return info


def _bad_verdict(step: StepResult, label: str) -> str:
    if step.timed_out:
        return "timeout"
    if step.signal or step.rc not in (1, 2, 70):
        return "crash"
    return label


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    mbs = [row.get(k) for k in ("export_mb", "verify_mb", "plant_mb") if row.get(k) is not None]
    row["peak_mb"] = max(mbs) if mbs else None
    row["finished"] = _now()
    return row


def _round(v: float | None, n: int) -> float | None:
    return None if v is None else round(v, n)


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


# state ------------------------------------------------------------------------------------------------------------


def load_state(path: Path) -> dict[str, dict[str, Any]]:
    """Finished rows by model (the last line of a model wins; a half-written last line is ignored)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict) and "model" in row:
                    rows[row["model"]] = row
    return rows


def append_state(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a line cut short by a kill: end it, so this row is a line of its own
                f.write(b"\n")
        f.write((json.dumps(row, default=str) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` through deployinc's atomic writer (its folder made first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text, force=True)


# report -----------------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """The machine, from deployinc's machine record (core/env.py), under this page's JSON keys."""
    m = env.machine(gpu=False)
    return {
        "cpu": m.cpu_model, "cores": m.logical_cpus, "usable_cores": m.usable_cpus,
        "python": m.python, "platform": m.platform, "versions": m.versions,
        "date": _now(),
    }  # fmt: skip


def _fmt(v: Any, spec: str = "") -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float) and spec:
        return format(v, spec)
    return str(v).replace("\n", " ")


def summary_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = {v: 0 for v in VERDICTS}
    for r in rows:
        counts[r.get("verdict", "crash")] = counts.get(r.get("verdict", "crash"), 0) + 1
    return counts


def render_markdown(rows: list[dict[str, Any]], pending: list[str], machine: dict[str, Any], command: str) -> str:
    counts = summary_counts(rows)
    total_s = sum((r.get("export_s") or 0) + (r.get("verify_s") or 0) + (r.get("plant_s") or 0) for r in rows)
    v = machine["versions"]
    lines = [
        "# Zoo sweep: `deployinc export NAME` then `deployinc verify NAME.onnx`, no flags",
        "",
        f"Written by `scripts/sweep_zoo.py` ({command}) on {machine['date']}.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), Python "
        f"{machine['python']}; torch {v.get('torch', '?')}, torchvision {v.get('torchvision', '?')}, timm "
        f"{v.get('timm', '?')}, onnx {v.get('onnx', '?')}, onnxruntime {v.get('onnxruntime') or v.get('onnxruntime-gpu', '?')}, "
        f"deployinc {v.get('deployinc', '?')}. Random weights (deployinc's seeded init), ORT CPU vs eager torch.",
        "",
        "## Summary",
        "",
        f"{len(rows)} models run" + (f", {len(pending)} not run yet" if pending else "")
        + f"; {total_s / 60:.1f} min in their processes.",
    ]
    lines += timing_lines(rows)
    lines += ["", *Table(["verdict", "models"], [[k, str(n)] for k, n in counts.items()]).markdown_lines(_PIPE)]
    planted = [r["plant"] for r in rows if isinstance(r.get("plant"), dict)]
    if planted:
        caught = sum(1 for p in planted if p.get("caught"))
        near = sum(1 for p in planted if p.get("match") in ("exact", "parent"))
        lines += ["", f"Planted faults (middle Conv weights x{PLANT_SCALE}): {caught}/{len(planted)} caught (verify exit 1), "
                  f"{near}/{len(planted)} localised at the planted module or its enclosing module."]
    lines += ["", "## Models", ""] + model_table(rows)
    if planted:
        lines += ["", "## Planted faults", ""] + plant_table(rows)
    if pending:
        lines += ["", "## Not run yet", "", ", ".join(pending)]
    lines += ["", "Verdicts: PASS/FAIL = verify exit 0/1; export-error = export exit 1/2/70; inconclusive = verify exit 3; verify-error = verify exit 2/70;",
              "timeout = past the per-model limit; crash = killed by a signal or an unexpected exit code. max_rel = max |error| /",
              "max |reference| over outputs, batches and backends; noise floor = verify's fp32-vs-fp64 figure when it reports one;",
              "peak MB = largest ru_maxrss of the model's child processes. Logs and reports: `<work>/runs/<model>/`.", ""]
    return "\n".join(lines)


def model_seconds(r: dict[str, Any]) -> float:
    return sum(r.get(k) or 0 for k in ("export_s", "verify_s", "plant_s"))


def timing_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Median and slowest models, and the wall-clock span of the rows, for estimating a rerun."""
    secs = sorted(model_seconds(r) for r in rows)
    if not secs:
        return []
    slow = sorted(rows, key=model_seconds, reverse=True)[:3]
    span = ""
    with contextlib.suppress(Exception):
        t0 = min(dt.datetime.fromisoformat(r["started"]) for r in rows)
        t1 = max(dt.datetime.fromisoformat(r["finished"]) for r in rows)
        span = f"; first start to last finish {(t1 - t0).total_seconds() / 60:.1f} min (with any pauses between runs)"
    return ["", f"Per model: median {secs[len(secs) // 2]:.0f} s, slowest "
            + ", ".join(f"`{r['model']}` {model_seconds(r):.0f} s" for r in slow) + span + "."]


def model_table(rows: list[dict[str, Any]]) -> list[str]:
    head = ["#", "model", "params M", "verdict", "path", "fallback", "nodes", "export s", "verify s", "max_rel", "budget",
            "fp32 noise floor", "peak MB", "error"]
    body = []
    for i, r in enumerate(rows, 1):
        floor = _fmt(r.get("noise_floor"), ".2e") or (r.get("floor_status") if r.get("floor_status") != "measured" else "")
        params = f"{r['params'] / 1e6:.1f}" if isinstance(r.get("params"), (int, float)) else ""
        cells = [str(i), f"`{r['model']}`", params, r.get("verdict", ""), r.get("path"), r.get("fallback"), r.get("nodes"),
                 _fmt(r.get("export_s"), ".1f"), _fmt(r.get("verify_s"), ".1f"), _fmt(r.get("max_rel"), ".2e"),
                 _fmt(r.get("budget"), ".1e"), floor, _fmt(r.get("peak_mb"), ".0f"), r.get("error")]
        body.append([_fmt(c) for c in cells])
    return Table(head, body).markdown_lines(_PIPE)


def plant_table(rows: list[dict[str, Any]]) -> list[str]:
    head = ["model", "planted node", "scope", "verify exit", "localised first", "match", "max_rel"]
    body = []
    for r in rows:
        p = r.get("plant")
        if isinstance(p, dict):
            cells = [f"`{r['model']}`", p.get("node"), p.get("scope"), p.get("rc"), p.get("localized"), p.get("match"),
                     _fmt(p.get("max_rel"), ".2e") or p.get("error")]
            body.append([_fmt(c) for c in cells])
    return Table(head, body).markdown_lines(_PIPE)


def write_reports(rows: list[dict[str, Any]], pending: list[str], md_path: Path, json_path: Path, command: str) -> None:
    machine = machine_info()
    write_atomic(md_path, render_markdown(rows, pending, machine, command))
    data = {"machine": machine, "command": command, "counts": summary_counts(rows), "pending": pending, "rows": rows}
    write_atomic(json_path, json.dumps(data, indent=2, default=str) + "\n")


def plant_text(p: dict[str, Any]) -> str:
    if p.get("rc") == 1:
        return f"planted fault caught, localised at {p.get('localized')} ({p.get('match')})"
    return f"planted fault NOT caught: verify exit {p.get('rc')}" + (f", {p['error']}" if p.get("error") else "")


# progress ---------------------------------------------------------------------------------------------------------


class Progress:
    """The sweep's progress through deployinc's one progress (core/progress.py): a line per model; on a terminal with
    rich, a bar with the model count and the running model's stage below the lines (all on stderr)."""

    def __init__(self, total: int, done: int) -> None:
        self.total, self.label, self.m0 = total, "", time.perf_counter()
        # auto_refresh off: no refresh thread while children are forked; tick() refreshes it.
        self.lines = core_progress.Progress.for_stream(lambda msg: print(msg, file=sys.stderr, flush=True), auto_refresh=False)
        self.lines.count("", total, done)

    def start(self, i: int, spec: str) -> None:
        self.label, self.m0 = f"model {i}/{self.total} {spec}", time.perf_counter()
        if not self.lines.live:
            self.lines.say(f"[{i}/{self.total}] {spec} ...")
        self.tick("export")

    def tick(self, stage: str) -> None:
        self.lines.update(description=f"{self.label}: {stage} {time.perf_counter() - self.m0:.0f} s")

    def done(self, row: dict[str, Any]) -> None:
        p = row.get("plant") or {}
        line = (f"{self.label}: {row.get('verdict')} in {time.perf_counter() - self.m0:.1f} s (export "
                f"{_fmt(row.get('export_s'), '.1f') or '-'} s, verify {_fmt(row.get('verify_s'), '.1f') or '-'} s"
                + (f", {plant_text(p)}" if p else "") + ")"
                + (f": {row['error']}" if row.get("error") else "")
                + f"; sweep {self.lines.elapsed() / 60:.1f} min")
        self.lines.advance(line)

    def stop(self) -> None:
        self.lines.close()


# main -------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=("torchvision", "timm", "all"), default=None, help="model set (default: all)")
    ap.add_argument("--models", default=None, help="comma-separated specs instead of --set (name, timm/NAME)")
    ap.add_argument("--max-params", type=float, default=DEFAULT_MAX_PARAMS, help="torchvision set: largest parameter count (default 100e6)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work dir: state.jsonl, runs/<model>/ (default {DEFAULT_WORK.relative_to(ROOT)})")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per model, all its steps (default 900)")
    ap.add_argument("--smallest-first", action="store_true", help="run the models in order of parameter count (the report keeps the set's order)")
    ap.add_argument("--plant", action="store_true", help="also verify a copy with the middle Conv's weights x1.1")
    ap.add_argument("--redo", nargs="?", const="all", default=None, metavar="WHAT",
                    help="run finished models again: all (bare --redo), or comma-separated verdicts and/or models")
    ap.add_argument("--keep-onnx", action="store_true", help="keep the .onnx of passing models (default: kept only for the rest)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the Markdown/JSON from the state, run nothing")
    ap.add_argument("--list", action="store_true", help="print the selected models with parameter counts, run nothing")
    ap.add_argument("--out-md", type=Path, default=DEFAULT_MD, help="Markdown report (default docs/zoo-sweep.md)")
    ap.add_argument("--out-json", type=Path, default=DEFAULT_JSON, help="JSON report (default docs/zoo-sweep.json)")
    return ap.parse_args(argv)


def wants_redo(redo: str | None, row: dict[str, Any]) -> bool:
    """``--redo``: all, or a comma-separated list of verdicts (``timeout,crash``) and/or model specs."""
    if not redo:
        return False
    what = {w.strip() for w in redo.split(",")}
    return "all" in what or row.get("model") in what or row.get("verdict") in what


def run_sweep(models: list[str], args: argparse.Namespace, state_path: Path, command: str) -> int:
    state = load_state(state_path)
    todo = [m for m in models if m not in state or wants_redo(args.redo, state[m])]
    print(f"{len(models)} models, {len(models) - len(todo)} already in {state_path}, {len(todo)} to run", file=sys.stderr)
    progress = Progress(len(models), len(models) - len(todo))
    try:
        for spec in todo:
            progress.start(models.index(spec) + 1, spec)
            row = sweep_one(spec, args.work, args.timeout, args.plant, tick=progress.tick)
            row["params"] = args.params.get(spec)
            append_state(state_path, row)
            state[spec] = row
            if row.get("verdict") == "PASS" and (row.get("plant") or {"caught": True}).get("caught") and not args.keep_onnx:
                for f in ("model.onnx", "model.onnx.data", "planted.onnx"):
                    (model_dir(args.work, spec) / f).unlink(missing_ok=True)
            progress.done(row)
    except KeyboardInterrupt:
        again = "the same command" + (" without --redo" if args.redo else "")
        print(f"interrupted: the finished models are in {state_path}; run {again} to resume", file=sys.stderr)
        return 130
    finally:
        progress.stop()
        rows = [state[m] for m in models if m in state]
        write_reports(rows, [m for m in models if m not in state], args.out_md, args.out_json, command)
        print(f"wrote {args.out_md} and {args.out_json}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python scripts/sweep_zoo.py " + " ".join(sys.argv[1:] if argv is None else argv)
    state_path = args.work / "state.jsonl"
    if args.report_only:
        state = load_state(state_path)
        chosen = select_models(args.set, args.models, args.max_params) if (args.set or args.models) else list(state)
        rows = [state[m] for m in chosen if m in state]
        write_reports(rows, [m for m in chosen if m not in state], args.out_md, args.out_json, command)
        print(f"wrote {args.out_md} and {args.out_json} ({len(rows)} rows from {state_path})", file=sys.stderr)
        return 0
    models = select_models(args.set or "all", args.models, args.max_params)
    args.params = {m: param_count(m) for m in models}
    if args.list:
        for i, m in enumerate(models, 1):
            p = args.params[m]
            print(f"{i:3d}  {m:40s} {family_of(m):22s} {p / 1e6 if p else float('nan'):8.2f}M")
        return 0
    if args.smallest_first:
        models = sorted(models, key=lambda m: args.params[m] if args.params[m] is not None else float("inf"))
    old = signal.signal(signal.SIGTERM, _interrupt)  # a plain kill ends the sweep like Ctrl-C: children killed, report written
    try:
        return run_sweep(models, args, state_path, command)
    finally:
        signal.signal(signal.SIGTERM, old)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
