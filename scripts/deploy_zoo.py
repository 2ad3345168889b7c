"""Run ``deployinc deploy`` on a set of models in one run and write ``docs/benchmarks/deploy-<machine>.md``.

For each model: the chosen candidate, its p50 at batch 1, its speedup over eager torch and over plain ORT CPU
fp32 (same run, same machine), and the whole candidate table. Trained models are given as
``name=checkpoint[:heldout-folder]`` (``--trained``): their candidates are verified on the held-out images, with
top-1 accuracy, and the report says which weights and data each number comes from.

    python scripts/deploy_zoo.py                                   # googlenet resnet50 mobilenet_v2 inception_v3
    python scripts/deploy_zoo.py --trained resnet18=r18.pt:heldout/ --models googlenet
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["googlenet", "resnet50", "mobilenet_v2", "inception_v3"]


def machine_name() -> str:
    """``intel-xeon-2cpu``: the CPU model (from /proc/cpuinfo) and the usable CPUs, as a file-name part."""
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1]
                break
    except OSError:
        pass
    import os

    words = re.sub(r"\(R\)|\(TM\)|CPU|Processor|@.*", " ", model).lower().split()[:2]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return "-".join(words + [f"{cpus}cpu"])


def _parse_trained(spec: str) -> dict[str, Any]:
    """``name=checkpoint[:heldout[:calibration]]``; the class count and input size come from the checkpoint's
    training record (``deployinc train`` writes one)."""
    from deployinc.io.checkpoints import load_checkpoint

    name, _, rest = spec.partition("=")
    weights, heldout, calib = (rest.split(":") + ["", ""])[:3]
    if not name or not weights:
        raise SystemExit(f"--trained {spec!r}: expected name=checkpoint[:heldout-folder[:calibration-folder]]")
    _, raw = load_checkpoint(weights, with_extra=True)
    record = (raw or {}).get("record") or {}
    entry: dict[str, Any] = {"model": name, "weights": weights, "accuracy_data": heldout or None, "data": calib or None}
    if record.get("num_classes"):
        entry["num_classes"] = int(record["num_classes"])
    if record.get("input_size"):
        entry["input_shape"] = (1, *[int(v) for v in record["input_size"]])
    entry["trained"] = (f"deployinc train {record.get('arch', name)} on {record.get('data')} ({record.get('train_images')} images, "
                        f"{record.get('epochs')} epochs, {record.get('image_size')} px): held-out accuracy {record.get('accuracy', 0):.2%}")
    return entry


def _fmt(v: Any, f: str) -> str:
    return "-" if v is None else format(v, f)


def _row(entry: dict[str, Any]) -> str:
    res = entry.get("result")
    if res is None:
        return f"| {entry['label']} | - | {entry.get('error', 'failed')} | - | - | - | - | {entry['seconds']:.0f} |"
    c = res.chosen
    if c is None:
        return f"| {entry['label']} | none passed | {res.why} | - | - | - | - | {entry['seconds']:.0f} |"
    t = (c.get("timing") or {}).get("1") or {}
    sp = (c.get("speedup") or {}).get("1") or {}
    m = c.get("metrics") or {}
    agree = _fmt(m.get("top1_agreement"), ".4f")
    acc = _fmt(m.get("top1_accuracy"), ".4f")
    return (
        f"| {entry['label']} | {c['id']} | p50 {_fmt(t.get('p50_ms'), '.2f')} ms | {_fmt(sp.get('vs_torch'), '.2f')}x | "
        f"{_fmt(sp.get('vs_ort_fp32'), '.2f')}x | {agree} | {acc} | {entry['seconds']:.0f} |"
    )


def run(entries: list[dict[str, Any]], work: Path, iters: int, log: Any) -> list[dict[str, Any]]:
    from deployinc.deploy.run import deploy
    from deployinc.errors import DeployincError

    out = []
    for e in entries:
        label = e["model"] + (" (trained)" if e.get("weights") else "")
        log(f"== {label}")
        t = time.perf_counter()
        rec: dict[str, Any] = {"label": label, **e}
        try:
            options = {k: e[k] for k in ("weights", "accuracy_data", "data", "num_classes", "input_shape") if e.get(k) is not None}
            rec["result"] = deploy(e["model"], out=str(work / f"{Path(e['model']).stem}{'-trained' if e.get('weights') else ''}.deploy"),
                                   force=True, iters=iters, log=log, **options)  # fmt: skip
        except DeployincError as exc:
            rec["error"] = exc.message
        rec["seconds"] = time.perf_counter() - t
        out.append(rec)
    return out


def render(records: list[dict[str, Any]], machine: str, started: str, wall: float) -> str:
    from deployinc.core.env import speed_flags
    from deployinc.deploy.report import markdown_table, provenance_lines

    lines = [
        f"# deploy on {machine}",
        "",
        f"`python scripts/deploy_zoo.py`, one run started {started}, {wall / 60:.1f} min. CPU features: {', '.join(speed_flags()) or 'none'}.",
        "Every number below comes from that run: each model's candidates and its eager-torch baseline were timed in",
        "the same process, one after the other (batch 1, p50 of the timed iterations). Random-weight models carry",
        "seeded weights with recalibrated BatchNorm statistics; their int8 verdicts say how quantization treats those",
        "weights, not trained ones, and their logits are nearly flat, so the raw top-1 agreement of a lower",
        "precision is low while the tie-aware check of its preset passes. The trained rows name their checkpoint and",
        "held-out images: there top-1 agreement and accuracy mean what they say.",
        "",
        "| model | chosen | latency | x eager torch | x ORT fp32 | top-1 agreement (raw) | top-1 accuracy | deploy s |",
        "|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in records],
        "",
    ]  # fmt: skip
    for r in records:
        res = r.get("result")
        if res is None:
            continue
        lines += [f"## {r['label']}", ""]
        if r.get("trained"):
            lines += [f"Checkpoint: {r['weights']}, from {r['trained']}; verified on {r['accuracy_data']}" + (f", calibrated on {r['data']}" if r.get("data") else "") + ".", ""]
        lines += [f"Target {res.target} ({res.target_reason}); {res.why}.", "", markdown_table(res), ""]
        lines += provenance_lines(res) + [""]
        if res.left_out:
            lines += ["Left out: " + "; ".join(f"{d['backend']} ({d['reason']})" for d in res.left_out), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names ('' for none)")
    ap.add_argument("--trained", action="append", default=[], help="name=checkpoint[:heldout-folder], repeatable")
    ap.add_argument("--work", default=str(ROOT / "build" / "deploy-zoo"), help="where the packages go")
    ap.add_argument("--out", default=None, help="the markdown report (default docs/benchmarks/deploy-<machine>.md)")
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args(argv)
    entries = [{"model": m} for m in args.models.split(",") if m.strip()] + [_parse_trained(s) for s in args.trained]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_name()
    out = Path(args.out) if args.out else ROOT / "docs" / "benchmarks" / f"deploy-{machine}.md"
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.perf_counter()
    records = run(entries, work, args.iters, lambda s: print(s, flush=True))
    text = render(records, machine, started, time.perf_counter() - t0)
    out.parent.mkdir(parents=True, exist_ok=True)
    from deployinc.io import atomic_write_text

    atomic_write_text(out, text, force=True)
    summary = [{"model": r["label"], "chosen": (r["result"].chosen or {}).get("id") if r.get("result") else None, "error": r.get("error")} for r in records]
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=1), force=True)
    print(f"wrote {out}")
    return 0 if all(r.get("result") is not None and r["result"].chosen is not None for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
