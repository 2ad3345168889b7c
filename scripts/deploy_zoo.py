"""Run ``deployinc deploy`` on a set of models in one run and write ``docs/benchmarks/deploy-<machine>.md``.

For each model: the chosen candidate, its p50 at batch 1, its speedup over eager torch and over plain ORT CPU
fp32 (same run, same machine), and the whole candidate table. Trained models are given as
``name=checkpoint[:heldout-folder[:calibration-folder]]`` (``--trained``): their candidates are verified on the
held-out images (deploy's ``--accuracy-data``: lower precision judged by the task rule), calibrated on the
calibration folder (``--data``), and the report adds an evidence table: fp32 against the shipped artifact's top-1
accuracy, the top-1 agreement, the rule that accepted it, the int8 recipe, the layers kept in float, and the
speedup over ORT CPU fp32 at batch 1, each with the CPU model and its int8/bf16 flags.

    python scripts/deploy_zoo.py                                   # googlenet resnet50 mobilenet_v2 inception_v3
    python scripts/deploy_zoo.py --trained resnet18=r18.pt:heldout/:calib/ --models '' --threads 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["googlenet", "resnet50", "mobilenet_v2", "inception_v3"]


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


#: The summary table's columns (one row per model: :func:`_row`).
SUMMARY_HEAD = ["model", "chosen", "latency", "x eager torch", "x ORT fp32", "top-1 agreement (raw)", "top-1 accuracy", "deploy s"]
#: The trained-model table's columns (one row per model: :func:`evidence_row`).
EVIDENCE_HEAD = ["model", "shipped", "rule that accepted it", "fp32 top-1", "shipped top-1", "top-1 agreement", "x ORT CPU fp32", "int8 recipe",
                 "layers kept in float", "CPU"]  # fmt: skip


def _row(entry: dict[str, Any]) -> list[str]:
    """One model's cells of the summary table."""
    res = entry.get("result")
    if res is None:
        return [entry["label"], "-", str(entry.get("error", "failed")), "-", "-", "-", "-", f"{entry['seconds']:.0f}"]
    c = res.chosen
    if c is None:
        return [entry["label"], "none passed", str(res.why), "-", "-", "-", "-", f"{entry['seconds']:.0f}"]
    t = (c.get("timing") or {}).get("1") or {}
    sp = (c.get("speedup") or {}).get("1") or {}
    m = c.get("metrics") or {}
    agree = _fmt(m.get("top1_agreement"), ".4f")
    acc = _fmt(m.get("top1_accuracy"), ".4f")
    return [entry["label"], c["id"], f"p50 {_fmt(t.get('p50_ms'), '.2f')} ms", f"{_fmt(sp.get('vs_torch'), '.2f')}x",
            f"{_fmt(sp.get('vs_ort_fp32'), '.2f')}x", agree, acc, f"{entry['seconds']:.0f}"]  # fmt: skip


def run(entries: list[dict[str, Any]], work: Path, iters: int, log: Any, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Deploy each entry; ``extra``: options given to every deploy (threads, calibration_images)."""
    from deployinc.deploy.run import deploy
    from deployinc.errors import DeployincError

    out = []
    for e in entries:
        # a trained model is named by its checkpoint too: two checkpoints of one architecture get their own row and package
        ckpt = Path(e["weights"]).stem if e.get("weights") else ""
        label = e["model"] + (f" (trained: {ckpt})" if ckpt else "")
        log(f"== {label}")
        t = time.perf_counter()
        rec: dict[str, Any] = {"label": label, **e}
        try:
            options = {k: e[k] for k in ("weights", "accuracy_data", "data", "num_classes", "input_shape") if e.get(k) is not None}
            options.update({k: v for k, v in (extra or {}).items() if v is not None})
            rec["result"] = deploy(e["model"], out=str(work / f"{Path(e['model']).stem}{'-trained-' + ckpt if ckpt else ''}.deploy"),
                                   force=True, iters=iters, log=log, **options)  # fmt: skip
        except DeployincError as exc:
            rec["error"] = exc.message
        rec["seconds"] = time.perf_counter() - t
        out.append(rec)
    return out


def cpu_text(res: Any) -> str:
    """``AMD EPYC (int8/bf16 flags: avx512_vnni, ...)``: the CPU the figures were measured on, from the run's own
    environment record (the baseline's), else this process's."""
    from deployinc.core.env import cpu_model, features_text, isa_cap, speed_flags

    cpu = ((getattr(res, "baseline", None) or {}).get("environment") or {}).get("cpu") or {}
    model = cpu.get("model") if isinstance(cpu, dict) else None
    mine = isinstance(cpu, dict) and "int8_flags" in cpu
    flags = (cpu.get("int8_flags", []) + cpu.get("bf16_flags", [])) if mine else speed_flags()
    return f"{model or cpu_model() or 'unknown CPU'} (int8/bf16 flags: {features_text(flags, cpu.get('isa_cap') if mine else isa_cap())})"


def evidence(res: Any) -> dict[str, Any]:
    """What the trained-model table shows for one deploy result: the chosen candidate, its rule, top-1 accuracy
    against eager torch fp32's, top-1 agreement, speedup over ORT CPU fp32 at the first batch size, the int8 recipe
    and the layers kept in float; and, per lower-precision candidate, its verdict and why."""
    c = res.chosen
    key = str(res.request.batches[0])
    plain = next((r for r in res.results if r.get("id") == "fp32-ort-cpu"), None) or {}
    ev: dict[str, Any] = {
        "cpu": cpu_text(res), "batch": int(key),
        "fp32_top1_accuracy": ((plain.get("metrics") or {}).get("top1_reference")),
        "fp32_ort_top1_accuracy": (plain.get("metrics") or {}).get("top1_accuracy"),
        "fp32_ort_p50_ms": ((plain.get("timing") or {}).get(key) or {}).get("p50_ms"),
        "chosen": None, "lower": [],
    }  # fmt: skip
    for r in res.results:
        if r.get("precision") != "fp32":
            m = r.get("metrics") or {}
            reason = r.get("reason") or "; ".join(r.get("failures") or [])
            ev["lower"].append({"id": r["id"], "verdict": r.get("verdict"), "top1_accuracy": m.get("top1_accuracy"),
                                "top1_agreement": m.get("top1_agreement"), "reason": reason[:300]})  # fmt: skip
    if c is None:
        return ev
    m = c.get("metrics") or {}
    art = (res.artifacts or {}).get(c.get("artifact", "")) or {}
    ev["fp32_top1_accuracy"] = m.get("top1_reference", ev["fp32_top1_accuracy"])
    ev["chosen"] = {
        "id": c["id"], "precision": c.get("precision"), "backend": c.get("backend"), "rule": c.get("rule"),
        "top1_accuracy": m.get("top1_accuracy"), "top1_agreement": m.get("top1_agreement"), "cosine": m.get("cosine"),
        "p50_ms": ((c.get("timing") or {}).get(key) or {}).get("p50_ms"),
        "vs_ort_fp32": ((c.get("speedup") or {}).get(key) or {}).get("vs_ort_fp32"),
        "recipe": (art.get("recipe") or {}).get("name"),
        "float_layers": [{"module": x.get("module"), "node": x.get("node")} for x in ((art.get("fallback") or {}).get("layers") or [])],
    }  # fmt: skip
    return ev


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def evidence_row(label: str, ev: dict[str, Any]) -> list[str]:
    """One row's cells of the trained-model table."""
    c = ev.get("chosen")
    if c is None:
        return [label, "none passed", "-", _pct(ev.get("fp32_top1_accuracy")), "-", "-", "-", "-", "-", ev["cpu"]]
    layers = ", ".join(f"`{x['module']}` ({x['node']})" for x in c["float_layers"]) or ("none" if c["precision"] == "int8" else "-")
    return [label, c["id"], c.get("rule") or "-", _pct(ev.get("fp32_top1_accuracy")), _pct(c.get("top1_accuracy")), _fmt(c.get("top1_agreement"), ".4f"),
            f"{_fmt(c.get('vs_ort_fp32'), '.2f')}x (p50 {_fmt(c.get('p50_ms'), '.2f')} vs {_fmt(ev.get('fp32_ort_p50_ms'), '.2f')} ms)",
            c.get("recipe") or "-", layers, ev["cpu"]]  # fmt: skip


def evidence_lines(records: list[dict[str, Any]]) -> list[str]:
    """The trained-model table (models deployed with --accuracy-data) and, per model, what each lower-precision
    candidate got; empty when no record has held-out images."""
    from deployinc.core.table import Table

    rows = [(r, evidence(r["result"])) for r in records if r.get("result") is not None and r.get("accuracy_data")]
    if not rows:
        return []
    lines = [
        "## Trained models: what deploy ships, judged on held-out images",
        "",
        "fp32 top-1: eager PyTorch fp32 on the held-out images (verify's reference); shipped top-1: the chosen candidate on",
        "the same images; agreement: the share whose arg-max equals eager fp32's; speedup: ORT CPU fp32's p50 over the",
        "chosen candidate's, batch 1, same run.",
        "",
        *Table(EVIDENCE_HEAD, [evidence_row(r["label"], ev) for r, ev in rows]).markdown_lines(),
        "",
    ]  # fmt: skip
    for r, ev in rows:
        lines += [f"Lower-precision candidates of {r['label']} (verdict, top-1 accuracy, agreement, reason):", ""]
        lines += [f"- {x['id']}: {str(x['verdict']).upper()}, {_pct(x['top1_accuracy'])}, {_fmt(x['top1_agreement'], '.4f')}"
                  + (f"; {x['reason']}" if x["reason"] else "") for x in ev["lower"]]  # fmt: skip
        lines.append("")
    return lines


def model_notes(res: Any) -> list[str]:
    """Below a model's table: what the shipped file did on other images (deploy's second look), then how each
    lower-precision artifact was made (:func:`made_lines`)."""
    from deployinc.deploy.report import second_look_lines

    return second_look_lines(res) + made_lines(res)


def made_lines(res: Any) -> list[str]:
    """How each lower-precision artifact of a model was made (the chosen one first): the int8 recipe and, for a mixed
    one, the layers kept in float with their share of the work and what the fallback cost in speed."""
    from deployinc.deploy.report import precision_lines

    seen: set[tuple[str, str | None]] = set()
    out: list[str] = []
    for c in ([res.chosen] if res.chosen else []) + list(res.results):
        art, floats = c.get("artifact"), (c.get("options") or {}).get("float")
        if c.get("precision") in (None, "fp32") or not art or (art, floats) in seen:
            continue
        seen.add((art, floats))
        body = precision_lines(res, c)
        if body:
            run = f", run with its float layers in {floats}" if floats else ""
            out += [f"How `{art}` was made{run}" + (" (the shipped artifact)" if c is res.chosen else "") + ":", "", *body]
    return out


def render(records: list[dict[str, Any]], machine: str, started: str, wall: float, command: str = "python scripts/deploy_zoo.py", threads: int | None = None) -> str:
    from deployinc.core.env import machine as machine_record
    from deployinc.core.table import Table
    from deployinc.deploy.report import markdown_table, provenance_lines, runoff_lines

    m = machine_record(gpu=False)

    lines = [
        f"# deploy on {machine}",
        "",
        f"`{command}`, one run started {started}, {wall / 60:.1f} min, {'intra-op threads ' + str(threads) if threads else 'default threads'}. "
        f"CPU: {m.cpu_model or 'unknown'}; int8/bf16 features: {m.features}.",
        "Every number below comes from that run: each model's candidates and its eager-torch baseline were timed in",
        "the same process, one after the other (batch 1, p50 of the timed iterations); where a model's section has a",
        "run-off paragraph, deploy then timed its fastest passing candidates again with ORT CPU fp32, interleaved (their",
        "rows say so, with their first timings), and chose on that. Random-weight models carry",
        "seeded weights with recalibrated BatchNorm statistics; their int8 verdicts say how quantization treats those",
        "weights, not trained ones, and their logits are nearly flat, so the raw top-1 agreement of a lower",
        "precision is low while the tie-aware check of its preset passes. The trained rows name their checkpoint and",
        "held-out images: there top-1 agreement and accuracy mean what they say.",
        *([f"{m.isa_cap} caps the instruction set of oneDNN, which OpenVINO's and PyTorch's CPU kernels run on, so the",
           "openvino rows and eager torch run as on a CPU without the hidden features; ONNX Runtime's own kernels ignore the",
           "cap, so its rows (the x ORT fp32 baseline included) keep this CPU's full speed: compare an openvino row with",
           "fp32-openvino for the like-for-like gain. The int8 recipe follows the cap."] if m.isa_cap else []),
        "",
        *Table(SUMMARY_HEAD, [_row(r) for r in records]).markdown_lines(),
        "",
        *evidence_lines(records),
    ]  # fmt: skip
    for r in records:
        res = r.get("result")
        if res is None:
            continue
        lines += [f"## {r['label']}", ""]
        if r.get("trained"):
            lines += [f"Checkpoint: {r['weights']}, from {r['trained']}; verified on {r['accuracy_data']}" + (f", calibrated on {r['data']}" if r.get("data") else "") + ".", ""]
        lines += [f"Target {res.target} ({res.target_reason}); {res.why}.", "", markdown_table(res), "", *runoff_lines(res)]
        lines += provenance_lines(res) + [""]
        lines += model_notes(res)
        if res.reused:
            lines += [f"Reused from an earlier deploy with the same model, data and options (deploy's cache): {', '.join(res.reused)}.", ""]
        if res.left_out:
            lines += ["Left out: " + "; ".join(f"{d['backend']} ({d['reason']})" for d in res.left_out), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names ('' for none)")
    ap.add_argument("--trained", action="append", default=[], help="name=checkpoint[:heldout-folder[:calibration-folder]], repeatable")
    ap.add_argument("--work", default=str(ROOT / "build" / "deploy-zoo"), help="where the packages go")
    ap.add_argument("--out", default=None, help="the markdown report (default docs/benchmarks/deploy-<machine>.md)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of every deploy (deploy --threads; default: deploy's)")
    ap.add_argument("--calibration-images", type=int, default=None, help="int8 calibration images (deploy --calibration-images)")
    ap.add_argument("--no-compile", action="store_true", help="no torch.compile row in the eager baseline (deploy --no-compile)")
    ap.add_argument("--require-backend", default=None, help="only ship a candidate on this backend (deploy --require-backend)")
    args = ap.parse_args(argv)
    entries = [{"model": m} for m in args.models.split(",") if m.strip()] + [_parse_trained(s) for s in args.trained]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from deployinc.core.env import isa_cap, machine_slug

    cap = isa_cap()  # a oneDNN cap (ONEDNN_MAX_CPU_ISA=AVX2: OpenVINO as on a CPU without VNNI) is another page
    machine = machine_slug() + (f"-onednn-{cap.partition('=')[2].lower().replace('_', '-')}" if cap else "")
    out = Path(args.out) if args.out else ROOT / "docs" / "benchmarks" / f"deploy-{machine}.md"
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.perf_counter()
    records = run(entries, work, args.iters, lambda s: print(s, flush=True), {"threads": args.threads, "calibration_images": args.calibration_images, "torch_compile": False if args.no_compile else None,
                                                                          "require_backend": args.require_backend})
    command = (f"{cap} " if cap else "") + "python scripts/deploy_zoo.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = render(records, machine, started, time.perf_counter() - t0, command.strip(), args.threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    from deployinc.io import atomic_write_text

    atomic_write_text(out, text, force=True)
    summary = [{"model": r["label"], "chosen": (r["result"].chosen or {}).get("id") if r.get("result") else None, "error": r.get("error"),
                "seconds": round(r["seconds"], 1), "threads": args.threads,
                **({"evidence": evidence(r["result"])} if r.get("result") is not None and r.get("accuracy_data") else {})} for r in records]  # fmt: skip
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=1), force=True)
    print(f"wrote {out}")
    return 0 if all(r.get("result") is not None and r["result"].chosen is not None for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
