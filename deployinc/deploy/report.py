"""deploy's evidence: the table of every candidate (terminal and report.md), report.json, and the latency plot."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from .. import backends as B
from ..core.env import BF16_FLAGS, INT8_FLAGS, features_text, isa_cap, speed_flags
from ..io import load_onnx
from ..metadata import read_provenance
from ..models.loading import weights_text
from .plan import eligible
from .runoff import reference_row, round_ratios
from ..core.precisions import FP32, INT8, INT8_ARTIFACTS, INT8_CPU, INT8_CPU_MIXED_BF16, INT8_CPU_MIXED_QDQ
from ..core.table import Table

#: After a figure that rests on an unsteady timing (bench's mark).
MARK = "!"
UNSTEADY_LEGEND = (
    f"{MARK}: an unsteady timing (its rounds disagreed, its p50 was over twice its minimum, or the machine's load "
    "average was above its core count), still so when measured again, or a speedup that rests on one: not a figure to "
    "quote or rank by"
)


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _row_flags(row: dict[str, Any] | None) -> list[str]:
    return list((row or {}).get("unsteady") or [])


def speedup_flags(result: Any, r: dict[str, Any], key: str) -> dict[str, list[str]]:
    """For the candidate ``r`` at batch ``key``: which measurements its p50 and its two speedups rest on are unsteady
    (``{"p50": [...], "vs_torch": [...], "vs_ort_fp32": [...]}``: the names of the unsteady ones, with the reasons)."""
    own = _row_flags((r.get("timing") or {}).get(key))
    torch_row = ((result.baseline.get("rows") or {}).get("torch") or {}).get("timing", {}).get(key)
    plain = next((x for x in result.results if x["id"] == f"{FP32}-{B.REFERENCE}"), None)
    plain_row = reference_row(plain, r, key, result.request.batches[0])
    mine = [f"{r['id']}: {'; '.join(own)}"] if own else []
    torch_flags = [f"eager torch: {'; '.join(_row_flags(torch_row))}"] if _row_flags(torch_row) else []
    plain_flags = [f"{FP32}-{B.REFERENCE}: {'; '.join(_row_flags(plain_row))}"] if _row_flags(plain_row) and plain is not r else []
    return {"p50": mine, "vs_torch": mine + torch_flags, "vs_ort_fp32": mine + plain_flags}


def any_unsteady(result: Any) -> bool:
    """Whether a figure of the table rests on an unsteady timing."""
    rows = [t for r in result.results for t in (r.get("timing") or {}).values()]
    rows += [t for row in (result.baseline.get("rows") or {}).values() for t in (row.get("timing") or {}).values()]
    return any(_row_flags(t) for t in rows)


def _why_not(r: dict[str, Any], req: Any) -> str:
    t = (r.get("timing") or {}).get(str(req.batches[0])) or {}
    shaky = f"unsteady timing: {'; '.join(_row_flags(t))}" if _row_flags(t) else ""
    if "first_timing" in r:
        shaky = " | ".join(x for x in (f"run-off figures (first timing p50 {_num(r['first_timing'].get('p50_ms'), '.2f')} ms)", shaky) if x)
    if r.get("verdict") == "pass":
        bar = eligible(r, req)
        if bar:
            return " | ".join(x for x in (f"not eligible: {bar}", shaky) if x)
        if str(r.get("rule", "")).startswith("task"):  # say which rule accepted it, and what the preset alone said
            pre = "; ".join(r.get("preset_failures") or [])[:160]
            return " | ".join(x for x in ("accepted by the task rule" + (f" (the preset alone: {pre})" if pre else ""), shaky) if x)
        return shaky
    bits = [r.get("reason") or "", "; ".join(r.get("failures") or [])[:200], r.get("localization") or "", shaky]
    return " | ".join(b for b in bits if b)


def table_rows(result: Any, mark: str = " **<- ship**") -> list[list[str]]:
    """One row per candidate: id, verdict, max_rel, cosine, top-1 agreement, top-1 accuracy, p50, p99, images/s,
    speedup over eager torch and over ORT fp32 (at the objective's batch size), peak RSS growth, note."""
    req = result.request
    b = str(req.batches[0]) if req.objective == "latency" else None
    rows = []
    for r in result.results:
        m = r.get("metrics") or {}
        timing = r.get("timing") or {}
        key = b or (max(timing, key=lambda k: timing[k]["images_per_s"]) if timing else str(req.batches[0]))
        t = timing.get(key) or {}
        sp = (r.get("speedup") or {}).get(key) or {}
        shipped = mark if result.chosen is not None and r["id"] == result.chosen["id"] else ""
        flags = speedup_flags(result, r, key)
        flag = lambda text, what: text + (MARK if flags[what] and text != "-" else "")  # noqa: E731
        rows.append([
            r["id"] + shipped, r["verdict"].upper(), _num(m.get("max_rel"), ".2e"), _num(m.get("cosine"), ".6f"),
            _num(m.get("top1_agreement"), ".4f"), _num(m.get("top1_accuracy"), ".4f"), flag(_num(t.get("p50_ms"), ".2f"), "p50"),
            _num(t.get("p99_ms"), ".2f"), flag(_num(t.get("images_per_s"), ".1f"), "p50"), flag(_num(sp.get("vs_torch"), ".2f"), "vs_torch"),
            flag(_num(sp.get("vs_ort_fp32"), ".2f"), "vs_ort_fp32"), _num(r.get("peak_rss_mib"), ".0f"), _why_not(r, req),
        ])  # fmt: skip
    return rows


HEADER = ["candidate", "verdict", "max_rel", "cosine", "top-1 agr. (raw)", "top-1 acc.", "p50 ms", "p99 ms", "images/s", "x torch", "x ORT fp32", "peak MiB", "note"]


def markdown_table(result: Any) -> str:
    return Table(HEADER, table_rows(result)).markdown()


def text_table(result: Any) -> str:
    """The table for a terminal: the same columns, aligned, notes on their own line."""
    rows = table_rows(result, mark=" *")
    lines = Table(HEADER[:-1], [r[:-1] for r in rows]).text_lines()
    out = lines[:1]
    for line, r in zip(lines[1:], rows):
        out.append(line)
        if r[-1]:
            out.append(f"    {r[-1]}")
    if result.chosen is not None:
        out.append("* chosen")
    if any_unsteady(result):
        out.append(UNSTEADY_LEGEND)
    return "\n".join(out)


def _baseline_lines(result: Any) -> list[str]:
    out = []
    for name, row in (result.baseline.get("rows") or {}).items():
        t = row.get("timing") or {}
        if t:
            parts = [
                f"batch {b}: p50 {v['p50_ms']:.2f} ms{MARK if _row_flags(v) else ''}, {v['images_per_s']:.1f} images/s"
                + (f" (unsteady: {'; '.join(_row_flags(v))})" if _row_flags(v) else "")
                for b, v in t.items()
            ]
            out.append(f"- {name}: " + "; ".join(parts))
        else:
            out.append(f"- {name}: did not run ({row.get('problem')})")
    return out


def provenance_lines(result: Any) -> list[str]:
    """Where the numbers come from: the weights, the verification inputs, the calibration images."""
    req = result.request
    prov = read_provenance(load_onnx(result.fp32_path, load_external=False).model)
    weights = "unknown (no deployinc provenance in the file)"
    if prov is not None:
        weights = weights_text(prov.model_spec, prov.weights) + (" with BatchNorm statistics recalibrated" if prov.bn_recalibrated else "")
        if prov.weights_sha256:
            weights += f" (sha256 {prov.weights_sha256[:12]})"
    inputs = f"the labelled images of {req.accuracy_data} (top-1 accuracy against their folder labels)" if req.accuracy_data else f"{req.samples} generated natural-statistics images (seed 0), at batch 1 and 8"
    out = [f"- Weights: {weights}.", f"- Verification inputs: {inputs}; reference: eager PyTorch fp32 of the same model."]
    for name in INT8_ARTIFACTS:
        cal = (result.artifacts.get(name) or {}).get("calibration")
        if cal:
            out.append(f"- {name} calibration: {cal}.")
    if not req.accuracy_data:
        out.append("- No --accuracy-data: top-1 accuracy is not measured; top-1 agreement with eager torch is.")
    return out


def float_layers(result: Any, cand: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers a (mixed) candidate keeps in float: node, torch module, the gain of that layer alone."""
    return list((((result.artifacts.get(cand.get("artifact", "")) or {}).get("fallback") or {}).get("layers")) or [])


def precision_lines(result: Any, cand: dict[str, Any]) -> list[str]:
    """How a lower-precision artifact was made: the int8 recipe for this CPU and the layers kept in float."""
    art = result.artifacts.get(cand.get("artifact", "")) or {}
    out = []
    recipe = art.get("recipe")
    if recipe:
        out.append(f"int8 recipe {recipe.get('name')} for this CPU's int8 path ({recipe.get('cpu_path')}): {recipe.get('reason')}.")
    floats = _floats(cand)
    if floats:
        out.append(f"{cand.get('backend')} computes the layers the file leaves in float in {floats} (its inference precision hint), "
                   "the int8 layers in int8.")  # fmt: skip
    layers = float_layers(result, cand)
    if layers:
        fbk = art.get("fallback") or {}
        share = fbk.get("float_share")
        work = f", {100 * share:.1f}% of the layers' multiply-adds" if isinstance(share, (int, float)) else ""
        out.append(f"{len(layers)} of {fbk.get('candidates', '?')} layers kept in float{work} (the layer fallback, {fbk.get('evaluations', '?')} "
                   f"evaluations, {fbk.get('seconds', '?')} s); every other layer runs in int8:")  # fmt: skip
        out += [f"- `{x['module']}` (ONNX node `{x['node']}`): alone in float it lowers the mean error by {_num(x.get('gain'), '.2e')}"
                + (f"; {100 * x['share']:.1f}% of the multiply-adds" if isinstance(x.get("share"), (int, float)) else "")
                + (f"; added for its float layers in {x['for']} (below)" if x.get("for") else "") for x in layers]  # fmt: skip
        out += _widened_lines(art)
        out += [f"- `{x['module']}` (ONNX node `{x['node']}`): computed in float with them (its output feeds only float layers now, so "
                f"ONNX Runtime no longer runs it in int8); {100 * float(x.get('share') or 0):.1f}% of the multiply-adds" for x in fbk.get("also_float") or []]  # fmt: skip
        same = {k: v for k, v in (cand.get("options") or {}).items() if k not in ("fallback", "float")}  # threads: as this one ran
        whole = next((r for r in result.results if r.get("artifact") == INT8_CPU and r.get("backend") == cand.get("backend")
                      and (r.get("options") or {}) == same), None)  # fmt: skip
        key = str(result.request.batches[0])
        mine = ((cand.get("timing") or {}).get(key) or {}).get("p50_ms")
        theirs = (((whole or {}).get("timing") or {}).get(key) or {}).get("p50_ms")
        if mine and theirs:
            out.append(f"What the fallback cost in speed: p50 {mine:.2f} ms against {theirs:.2f} ms for the whole-model int8 ({mine / theirs:.2f}x), same run"
                       + _float_speed(result, cand, key) + ".")  # fmt: skip
    return out + ([""] if out else [])


def report_dict(result: Any, triton_checked: str | None) -> dict[str, Any]:
    req = result.request
    return {
        "format": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": req.model,
        "weights": req.weights,
        "target": result.target,
        "target_reason": result.target_reason,
        "objective": req.objective,
        "batches": list(req.batches),
        "chosen": result.chosen["id"] if result.chosen else None,
        "why": result.why,
        "requirements": {"backend": req.require_backend, "precision": req.require_precision, "min_top1_agreement": req.min_top1_agreement},
        "candidates": result.results,
        "baseline": {k: v for k, v in result.baseline.items() if k != "environment"},
        "left_out": result.left_out,
        "artifacts": result.artifacts,
        "reused": result.reused,
        "cpu_flags": speed_flags(),
        "isa_cap": isa_cap(),
        "triton_config_check": triton_checked or "parsed with Triton's ModelConfig schema",
        "seconds": round(result.seconds, 1),
        "notes": result.notes,
        "second_look": result.second_look,
        "runoff": getattr(result, "runoff", None),
    }


def runoff_lines(result: Any) -> list[str]:
    """What the run-off timed again (:mod:`.runoff`), the first timings it replaced, and the shipped candidate's
    speedup over ORT CPU fp32 round by round."""
    data = getattr(result, "runoff", None)
    if not data:
        return []
    rows = data.get("rows") or {}
    firsts = "; ".join(f"{r['id']} {_num(r['first_timing'].get('p50_ms'), '.2f')}" for r in result.results if r["id"] in rows and "first_timing" in r)
    text = (f"Run-off: before the choice, {', '.join(f'`{i}`' for i in data['order'])} were timed again in one process, "
            f"{data['rounds']} rounds of {data['per_round']} at batch {data['batch']}, every one in turn within a round (the "
            f"order rotated), so that each saw the same machine; their rows give these figures (first timings, p50 ms: {firsts}).")  # fmt: skip
    chosen = result.chosen
    ratios = sorted(round_ratios(data, chosen["id"])) if chosen is not None else []
    if ratios:
        text += (f" Round by round, `{chosen['id']}` ran {ratios[0]:.2f}-{ratios[-1]:.2f}x ORT CPU fp32 "
                 f"(median {statistics.median(ratios):.2f}x).")  # fmt: skip
    if data.get("dropped"):
        text += " Could not be timed again, so not chosen: " + "; ".join(f"{k}: {v}" for k, v in data["dropped"].items()) + "."
    return [text, ""]


def second_look_lines(result: Any) -> list[str]:
    """What the chosen lower-precision file did on other images (:func:`deployinc.deploy.run._second_look`)."""
    look = getattr(result, "second_look", None)
    if not look:
        return []
    head = f"Judged again on {look['samples']} other generated images (seed {look['seed']}, which nothing in this deploy chose from): "
    why = "; ".join(x for x in look.get("failures") or [] if x)[:200]
    if look["verdict"] == "pass":
        return [head + f"PASS (cosine {_num(look.get('cosine'), '.6f')}, top-1 agreement {_num(look.get('top1_agreement'), '.4f')}).", ""]
    if look["verdict"] != "fail":
        return [head + f"{look['verdict']}" + (f" ({why})" if why else "") + "; nothing was judged.", ""]
    return [head + f"**FAIL** ({why}). This file's error sits at its preset, so its verdict depends on the images drawn "
            f"(on random weights, whose logits are nearly flat, this is common); judge it on your own images before you "
            f"ship it: `{verify_command(look)}`.", ""]  # fmt: skip


def verify_command(look: dict[str, Any]) -> str:
    """The verify command that judges the shipped file as deploy ran it (backend, compute precision, threads)."""
    threads = f" --threads {look['threads']}" if look.get("threads") else ""
    floats = f" --float-precision {look['float_precision']}" if look.get("float_precision") else ""
    return f"deployinc verify model.onnx --data <images> --providers {look.get('backend', B.REFERENCE)} --precision {look.get('precision', INT8)}{floats}{threads}"


def _run_snippet(chosen: dict[str, Any]) -> list[str]:
    b, p, opts = chosen["backend"], chosen["precision"], chosen.get("options", {})
    usage = B.get(b).usage
    return ["```python", *(usage(p, opts.get("threads"), opts.get("float")) if usage is not None else []), "```"]


def _speed_sentence(result: Any, chosen: dict[str, Any], key: str, t: dict[str, Any], sp: dict[str, Any]) -> str:
    """The chosen candidate's p50 and speedups; a speedup that rests on an unsteady timing is left out, and why said."""
    flags = speedup_flags(result, chosen, key)
    p50 = f"p50 {_num(t.get('p50_ms'), '.2f')} ms at batch {key}" + (f" (unsteady: {'; '.join(_row_flags(t))})" if flags["p50"] else "")
    claims, left = [], []
    for what, name in (("vs_torch", "eager torch"), ("vs_ort_fp32", "plain ORT CPU fp32")):
        if flags[what]:
            left.append(f"over {name} ({'; '.join(f for f in flags[what] if f not in flags['p50']) or 'this timing'})")
        else:
            claims.append(f"{_num(sp.get(what), '.2f')}x {name}")
    text = p50 + (", " + " and ".join(claims) + ", measured in the same run" if claims else "")
    if left:
        text += f"; no speedup claimed {' or '.join(left)}: the timings were unsteady, even measured again"
    return text


def render_markdown(result: Any, data: dict[str, Any], plot_name: str | None, triton_checked: str | None) -> str:
    req, chosen = result.request, result.chosen
    env = result.baseline.get("environment") or {}
    cpu = (env.get("cpu") or {}).get("model") if isinstance(env.get("cpu"), dict) else env.get("cpu")
    flags, cap = speed_flags(), isa_cap()
    lines = [f"# deploy: {req.model}", ""]
    if chosen is not None:
        m = chosen.get("metrics") or {}
        key = str(req.batches[0])
        sp = (chosen.get("speedup") or {}).get(key) or {}
        t = (chosen.get("timing") or {}).get(key) or {}
        lines += [
            f"**Ship `model.onnx`: {chosen['precision']} on {chosen['backend']}"
            + (f", its float layers in {_floats(chosen)}" if _floats(chosen) else "") + f"** ({result.why}).",
            "",
            f"{_speed_sentence(result, chosen, key, t, sp)}; accepted by the "
            f"{chosen.get('rule') or 'preset ' + str(m.get('preset', '?'))} (cosine {_num(m.get('cosine'), '.6f')}, top-1 agreement "
            f"{_num(m.get('top1_agreement'), '.4f')}" + (f", top-1 accuracy {_num(m.get('top1_accuracy'), '.4f')} vs fp32 "
            f"{_num(m.get('top1_reference'), '.4f')}" if m.get("top1_accuracy") is not None else "") + ").",
            "",
            *second_look_lines(result),
            *precision_lines(result, chosen),
        ]  # fmt: skip
    lines += [
        f"Target {result.target} ({result.target_reason}); objective {req.objective} at batch {', '.join(map(str, req.batches))}; "
        f"{len(result.results)} candidates in {result.seconds:.0f} s.",
        f"Machine: {cpu or 'unknown CPU'}; CPU features: {features_text(flags, cap) if flags or cap else 'none of ' + ', '.join(INT8_FLAGS + BF16_FLAGS)}.",
        "",
        "## Candidates",
        "",
        markdown_table(result),
        "",
        *([UNSTEADY_LEGEND + ".", ""] if any_unsteady(result) else []),
        *runoff_lines(result),
        "x torch / x ORT fp32: p50 of eager torch / of ORT CPU fp32 over this candidate's p50, same batch, same run "
        "(between two rows of the run-off: from its interleaved rounds). "
        "peak MiB: growth of this process's peak resident memory while the candidate was timed. top-1 agr. (raw): the "
        "share of inputs whose arg-max equals eager torch fp32's; the verdict's top-1 check is tie-aware (an input "
        "whose reference top two are within the preset's budget counts as agreeing), which matters for random "
        "weights, whose logits are nearly flat.",
        "",
        "Eager baseline (same run):",
        *_baseline_lines(result),
        "",
    ]  # fmt: skip
    if result.left_out:
        lines += ["Left out:", *[f"- {d['backend']}: {d['reason']}" for d in result.left_out], ""]
    if result.reused:
        lines += [f"Reused from an earlier run with the same model and options: {', '.join(result.reused)}.", ""]
    if plot_name:
        lines += [f"![latency]({plot_name})", ""]
    lines += ["## Where the numbers come from", "", *provenance_lines(result), ""]
    if chosen is not None:
        lines += ["## Run it", "", *_run_snippet(chosen), ""]
        lines += [
            "## Serve it with Triton",
            "",
            f"`triton/` is a model repository for Triton's onnxruntime backend (`tritonserver --model-repository=triton`); "
            f"its config.pbtxt {'was ' + (triton_checked or 'parsed with Triton ModelConfig schema') if triton_checked else 'parses with Triton ModelConfig schema (tritonclient model_config_pb2)'}.",
            "",
            *_triton_float_lines(result, chosen),
        ]  # fmt: skip
    return "\n".join(lines)


def _widened_lines(art: dict[str, Any]) -> list[str]:
    """How a mixed file made for bf16 float layers kept the layer search's margin in that form (its ``float_form``)."""
    bf = art.get("float_form") or {}
    if not bf.get("line") and not bf.get("note"):
        return []
    fp = bf.get("float_precision")
    where = f"on {bf.get('backend')} with its float layers in {fp}, on the search's {bf.get('images', '?')} images by the search's tolerance"
    if bf.get("added"):
        return [f"Judged {where}: the searched set {bf.get('base_line')}; with {len(bf['added'])} more layer(s) of the search's ranking "
                f"in float too it {bf.get('line')} ({bf.get('evaluations', '?')} evaluations)."]  # fmt: skip
    if bf.get("note"):
        return [f"Judged {where}: {bf.get('base_line', '')}; {bf['note']}." if bf.get("base_line") else f"{bf['note']}."]
    return [f"Judged {where}: the searched set {bf.get('line')}."]


def _float_speed(result: Any, cand: dict[str, Any], key: str) -> str:
    """For a candidate whose float layers ran below fp32: the searched file with fp32 float layers, same run."""
    twin = _sibling(result, cand) if _floats(cand) else None
    ms = (((twin or {}).get("timing") or {}).get(key) or {}).get("p50_ms")
    if not ms:
        return ""
    more = len((((result.artifacts.get(cand.get("artifact", "")) or {}).get("float_form") or {}).get("added")) or [])
    return (f" (its float layers in {_floats(cand)}" + (f", {more} more of them than {twin['id']}" if more and twin else "")
            + f"; {ms:.2f} ms for {'that file' if more else 'the same file'} with them in fp32)")


def _floats(cand: dict[str, Any]) -> str | None:
    """The precision a candidate's float layers ran in, when not fp32 (``float: bf16``)."""
    return (cand.get("options") or {}).get("float")


def _sibling(result: Any, cand: dict[str, Any]) -> dict[str, Any] | None:
    """The candidate without ``float`` on the same backend: the searched file (the one this candidate's artifact was
    made from) with its float layers at fp32."""
    same = {k: v for k, v in (cand.get("options") or {}).items() if k != "float"}
    arts = {cand.get("artifact")} | ({INT8_CPU_MIXED_QDQ} if cand.get("artifact") == INT8_CPU_MIXED_BF16 else set())
    return next((r for r in result.results if r.get("artifact") in arts and r.get("backend") == cand.get("backend")
                 and (r.get("options") or {}) == same), None)  # fmt: skip


def _triton_float_lines(result: Any, chosen: dict[str, Any]) -> list[str]:
    """What the Triton package cannot set: OpenVINO's precision hint for the float layers (the accelerator takes no
    parameters), so a server runs them at fp32: the sibling candidate's numbers and verdict, or where the file's set
    was widened for bf16 (another file than the sibling's), that file's own judgement with fp32 float layers."""
    floats = _floats(chosen)
    if not floats:
        return []
    form = ((result.artifacts.get(chosen.get("artifact", "")) or {}).get("float_form")) or {}
    if form.get("added"):
        return [f"Triton's OpenVINO accelerator takes no precision hint: a server built from `triton/` computes this file's float "
                f"layers in fp32 (judged so on the layer search's images: {form.get('fp32_float_layers', 'not judged')}); "
                "`## Run it` above sets the hint.", ""]  # fmt: skip
    twin = _sibling(result, chosen)
    said = f" ({twin['id']}: {str(twin.get('verdict', '?')).upper()} here)" if twin else ""
    return [f"Triton's OpenVINO accelerator takes no precision hint: a server built from `triton/` computes the float layers "
            f"in fp32, as the candidate without {floats} float layers did{said}; `## Run it` above sets the hint.", ""]  # fmt: skip


def write_plot(result: Any, path: Path) -> Path | None:
    """p50 latency at the first batch size of every candidate (green: passed, red: failed) and of the eager baseline
    (grey); a second panel with images/s when more than one batch size ran. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        result.notes.append("no latency plot: matplotlib is not installed (pip install 'deployinc[plot]')")
        return None
    req = result.request
    b = str(req.batches[0])
    labels, values, colours = [], [], []
    for name, row in (result.baseline.get("rows") or {}).items():
        v = (row.get("timing") or {}).get(b, {}).get("p50_ms")
        if v:
            labels.append(name), values.append(v), colours.append("#999999")
    for r in result.results:
        v = ((r.get("timing") or {}).get(b) or {}).get("p50_ms")
        if v:
            labels.append(r["id"]), values.append(v), colours.append("#2e7d32" if r["verdict"] == "pass" else "#c62828")
    if not values:
        return None
    panels = 2 if len(req.batches) > 1 else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 0.4 * len(values) + 1.5), squeeze=False)
    ax = axes[0][0]
    ax.barh(labels, values, color=colours)
    ax.invert_yaxis()
    ax.set_xlabel(f"p50 latency at batch {b} (ms)")
    if panels == 2:
        ax2 = axes[0][1]
        for r in result.results:
            t = r.get("timing") or {}
            xs = sorted(int(k) for k in t)
            if xs:
                ax2.plot(xs, [t[str(x)]["images_per_s"] for x in xs], marker="o", label=r["id"])
        ax2.set_xscale("log", base=2)
        ax2.set_xlabel("batch size")
        ax2.set_ylabel("images/s")
        ax2.legend(fontsize=6)
    fig.suptitle(f"deploy {req.model_name()}: green passed, red failed, grey eager torch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
