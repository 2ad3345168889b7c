"""The run-off: before the choice, the fastest passing candidates are timed again, interleaved with ORT CPU fp32.

Deploy times its candidates one after the other over several minutes. On a shared machine whose speed drifts (this
project's 2-core VM ran one googlenet int8 file at 2.35 ms at 13:16 and 5.52 ms at 17:20 UTC the same day) a candidate timed in a
slow minute loses to one timed in a fast one, and its speedup over ORT CPU fp32, timed minutes earlier, says as much
about the minutes as about the files. The run-off takes the passing, eligible candidates whose p50 is within
:data:`SPAN` of the best one's (at most :data:`MOST`, fastest first) and plain ORT CPU fp32, opens all their runners at
once and times them in :data:`ROUNDS` rounds, every runner in turn within a round (the order rotated from round to
round), so that each sees the same machine. Their rows then hold the run-off's figures (the first timing is kept as
``first_timing``): the choice and every speedup between two of them rest on the same minutes. Only for the latency
objective (the first batch size). A candidate that cannot be timed again is not chosen (its verdict becomes
``error``, with the reason); a run-off that could not time two of them, or ORT CPU fp32, is dropped. A run-off row is
marked unsteady by the spread and load rules only, not by its rounds disagreeing: the machine drifting from round to
round is what the interleaving shares out, and the report gives the shipped file's speedup round by round.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import backends as B
from ..bench.harness import BenchSettings, default_threads, open_steps
from ..bench.subject import open_onnx
from ..bench.timing import measure, summarize, unsteady_reasons
from ..core.precisions import FP32
from ..errors import DeployincError
from .plan import eligible, score

#: Contenders: passing candidates whose p50 is at most this many times the best one's. Wide, because a first timing
#: can be that far off: googlenet's mixed int8 file on OpenVINO took 2.69 ms in one deploy and 4.92 ms in the next,
#: whose fastest passing candidate took 3.54 ms (2026-12-07, this project's 2-core VM).
SPAN = 2.0
#: At most this many contenders (the fastest first), ORT CPU fp32 besides.
MOST = 6
#: Rounds; each contender takes ``max(3, iters // 2)`` samples per round.
ROUNDS = 6
FORMAT = "deployinc-runoff/1"


def reference_id() -> str:
    """The id of plain ORT CPU fp32, what every speedup is over."""
    return f"{FP32}-{B.REFERENCE}"


def reference_row(plain: dict[str, Any] | None, r: dict[str, Any], key: str, first_batch: int) -> dict[str, Any] | None:
    """The timing of ORT CPU fp32 (``plain``) that candidate ``r``'s speedup at batch ``key`` is over: the run-off's
    where both were in it (or neither was), ORT fp32's first timing where only it was."""
    if plain is None:
        return None
    if "first_timing" in plain and "first_timing" not in r and key == str(first_batch):
        return plain["first_timing"]
    return ((plain.get("timing") or {}).get(key)) or None


def contenders(results: list[dict[str, Any]], req: Any) -> list[dict[str, Any]]:
    """The candidates the run-off times: the fastest passing, eligible ones within :data:`SPAN` of the best, and ORT
    CPU fp32 (empty when that leaves fewer than two, or for the throughput objective)."""
    if req.objective != "latency":
        return []
    batches = list(req.batches)
    scored = [(score(r, req.objective, batches), r) for r in results if r.get("verdict") == "pass" and eligible(r, req) is None]
    passing = sorted(((s, r) for s, r in scored if s is not None), key=lambda sr: -sr[0])
    if not passing:
        return []
    best = passing[0][0]
    picked = [r for s, r in passing if s * SPAN >= best][:MOST]
    plain = next((r for r in results if r["id"] == reference_id() and (r.get("timing") or {}).get(str(batches[0]))), None)
    if plain is not None and plain not in picked:
        picked.append(plain)
    return picked if len(picked) > 1 else []


def run_off(req: Any, results: list[dict[str, Any]], path_of: Callable[[dict[str, Any]], Path], known: dict[str, Any] | None,
            save: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:  # fmt: skip
    """Time the :func:`contenders` again, interleaved, and put the figures in their rows (see the module docstring).
    ``known``: a run-off an earlier run of this deploy saved, reused when it timed the same contenders' same
    results. Returns what was measured (None: no run-off)."""
    picked = contenders(results, req)
    if not picked:
        return None
    key = {r["id"]: r.get("finished") for r in picked}
    batch = int(req.batches[0])
    if known and known.get("version") == FORMAT and known.get("key") == key and known.get("batch") == batch:
        data = known
    else:
        req.say(f"run-off: {', '.join(key)} timed again, interleaved, {ROUNDS} rounds")
        data = _measure(req, picked, path_of, batch)
        data["key"] = key
        rows = data["rows"]
        if len(rows) < 2 or (reference_id() in key and reference_id() not in rows):
            req.say("run-off: too few of them could be timed again (ORT CPU fp32 among them); the first timings stand")
            return None
        if not data["dropped"]:  # a failure is not kept: the next run times them again
            save(data)
    apply(results, data)
    return data


def apply(results: list[dict[str, Any]], data: dict[str, Any]) -> None:
    """Each contender's row at the run-off's batch size becomes the run-off's; its first timing moves to
    ``first_timing``."""
    b = str(data["batch"])
    for r in results:
        why = (data.get("dropped") or {}).get(r["id"])
        if why and r.get("verdict") == "pass":  # not ranked on a first timing beside the run-off's: it failed to run again
            r["verdict"], r["reason"] = "error", f"the run-off could not time it again: {why}"
        row = (data.get("rows") or {}).get(r["id"])
        if row is None or "first_timing" in r:
            continue
        r["first_timing"] = dict((r.get("timing") or {}).get(b) or {})
        r["timing"] = {**(r.get("timing") or {}), b: row}


def _measure(req: Any, picked: list[dict[str, Any]], path_of: Callable[[dict[str, Any]], Path], batch: int) -> dict[str, Any]:
    opened: list[tuple[str, Any, Callable[[], Any], Any]] = []  # id, runner, the timed step, its steps
    dropped: dict[str, str] = {}
    try:
        for r in picked:
            opts = r.get("options") or {}
            s = BenchSettings(backends=[r["backend"]], batches=[batch], precisions=[r["precision"]], warmup=req.warmup, iters=req.iters,
                              threads=opts.get("threads", req.threads), cuda_graph=bool(opts.get("cuda_graph")), float_precision=opts.get("float"))  # fmt: skip
            s.validate()
            s.threads = s.threads or default_threads()  # what bench times at when no thread count is given
            try:
                runner, steps = open_steps(open_onnx(path_of(r), trust_code=req.trust_model_code), s, r["backend"], r["precision"], batch)
            except DeployincError as exc:
                dropped[r["id"]] = exc.message
                continue
            except Exception as exc:  # noqa: BLE001 - a runtime's own error opening it again: not chosen, with the reason
                dropped[r["id"]] = _reason(exc)
                continue
            modes = steps.modes()
            opened.append((r["id"], runner, modes.get("e2e") or next(iter(modes.values())), steps))
        per_round = max(3, req.iters // 2)
        samples: dict[str, list[float]] = {i: [] for i, *_ in opened}
        round_p50: dict[str, list[float]] = {i: [] for i, *_ in opened}
        load_before = _load()
        for rnd in range(ROUNDS):
            k = rnd % max(1, len(opened))
            for ident, _, step, steps in opened[k:] + opened[:k]:
                if ident in dropped:
                    continue
                try:
                    m = measure(step, iters=per_round, warmup=req.warmup if rnd == 0 else 1, sync=steps.sync, time_first=False)
                except Exception as exc:  # noqa: BLE001 - a runner failing mid run-off: not chosen, with the reason
                    dropped[ident] = _reason(exc)
                    continue
                samples[ident] += m.samples
                round_p50[ident].append(summarize(m.samples, batch).p50)
        load = max(x for x in (load_before, _load(), 0.0) if x is not None)
    finally:
        for _, runner, _, steps in opened:
            if steps.close is not None:
                steps.close()
            runner.deactivate()
    cpus = os.cpu_count() or 1  # as bench's matrix counts them
    rows = {}
    for ident, got in samples.items():
        if ident in dropped:
            continue
        st = summarize(got, batch)
        rows[ident] = {"p50_ms": st.p50, "p99_ms": st.p99, "min_ms": st.min, "images_per_s": batch * 1000.0 / st.p50 if st.p50 > 0 else None,
                       "mean_images_per_s": st.throughput, "mode": "e2e", "iters": st.iters, "round_p50_ms": round_p50[ident],
                       "unsteady": unsteady_reasons(p50=st.p50, min_ms=st.min, load=load or None, cpus=cpus)}  # fmt: skip
    # "finished" is wall clock on purpose: a stamp compared across processes (the cache), not a duration
    return {"version": FORMAT, "batch": batch, "rounds": ROUNDS, "per_round": per_round, "order": [i for i, *_ in opened if i not in dropped],
            "rows": rows, "dropped": dropped, "finished": time.time()}  # fmt: skip


def _reason(exc: BaseException) -> str:
    return f"failed when timed again: {' '.join(str(exc).split())[:200] or type(exc).__name__}"


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def round_ratios(data: dict[str, Any] | None, ident: str) -> list[float]:
    """Per round: ORT CPU fp32's p50 over ``ident``'s (empty without a run-off that timed both)."""
    rows = (data or {}).get("rows") or {}
    mine, plain = rows.get(ident), rows.get(reference_id())
    if not mine or not plain or ident == reference_id():
        return []
    return [p / m for p, m in zip(plain["round_p50_ms"], mine["round_p50_ms"]) if m > 0]
