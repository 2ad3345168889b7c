"""Prepare a PyTorch model for deployment: eval mode, auxiliary heads and dropout removed, Conv+BN folded.

:func:`prepare` deep-copies the model (unless ``inplace=True``), runs the passes in order, and checks that the
prepared model computes what the original computes in eval mode (max error relative to the logits' scale at
most 1e-5, or, for deep networks whose own float32 noise is larger, no further from a float64 run of the original
than twice the original's own float32 error) — a fold that would change the numbers is a bug, and is reported as
an error rather than exported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ..core.images import natural_images
from ..core.metrics import Tolerance, compare_arrays
from ..core.outputs import first_output
from ..errors import BadInputError, ExportError, WeightsError
from ..io.checkpoints import nonfinite_summary, nonfinite_tensors
from ..models.loading import settle_hook_weights
from .fusion import fold_conv_bn_weights
from .records import PassRecord

PASSES = ("eval", "remove_aux_heads", "remove_dropout", "fold_conv_bn")
#: Reasons a BN is not folded that need no word: no convolution feeds it, or eval mode never runs it.
_QUIET_SKIPS = ("its input is not the output of a convolution", "not run by the forward pass")
#: The prepared model must match the original within this error relative to the output scale.
SELF_CHECK_MAX_REL = 1e-5

__all__ = ["PASSES", "PassRecord", "PrepareReport", "fold_conv_bn_weights", "prepare"]


@dataclass
class PrepareReport:
    """The record of :func:`prepare`: one :class:`PassRecord` per pass, and the self-check."""

    passes: list[PassRecord] = field(default_factory=list)
    self_check_max_rel: float | None = None
    self_check_float64: dict[str, float] | None = None

    @property
    def applied(self) -> list[str]:
        """Names of the passes that ran."""
        return [p.name for p in self.passes]

    @property
    def folds(self) -> list[tuple[str, str]]:
        """(conv path, bn path) of every folded pair."""
        out = []
        for p in self.passes:
            if p.name == "fold_conv_bn":
                for c in p.changed:
                    conv, _, bn = c.partition(" <- ")
                    out.append((conv, bn))
        return out

    def get(self, name: str) -> PassRecord | None:
        return next((p for p in self.passes if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passes": [p.to_dict() for p in self.passes],
            "self_check_max_rel": self.self_check_max_rel,
            "self_check_float64": self.self_check_float64,
        }

    def summary(self) -> str:
        return "; ".join(p.summary() for p in self.passes)

    def notes(self, limit: int = 5) -> list[str]:
        """Lines a user should read (each starts ``note:`` or ``warning:``): BatchNorm layers that use batch
        statistics in eval mode, the output kept, folds made through a weight reparametrisation, and each
        Conv+BN pair left unfolded for a reason other than having no convolution before the BN (at most
        ``limit`` of those, then a count)."""
        lines = [n for p in self.passes if p.name == "eval" for n in p.notes if n.startswith("warning: ")]
        lines += [f"note: {n}" for p in self.passes if p.name in ("single_output", "fold_conv_bn") for n in p.notes]
        fold = self.get("fold_conv_bn")
        kept = [(m, r) for m, r in (fold.skipped if fold else []) if not r.startswith(_QUIET_SKIPS)]
        lines += [f"note: BatchNorm {m} not folded: {r}" for m, r in kept[:limit]]
        if len(kept) > limit:
            lines.append(f"note: {len(kept) - limit} more BatchNorm layers not folded (the prepare report lists them)")
        return lines


def prepare(
    model: Any,
    input_shape: tuple[int, ...] = (1, 3, 224, 224),
    aux_heads: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    inplace: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> tuple[Any, PrepareReport]:
    """Run the deployment passes on a model.

    Args:
        model: The ``nn.Module``.
        input_shape: N, C, H, W of an example input (N is raised to 2 for the checks).
        aux_heads: Extra auxiliary heads to drop, by submodule path.
        skip: Pass names to skip (see :data:`PASSES`).
        inplace: Change ``model`` itself instead of a deep copy.
        mean: Normalisation mean of the example inputs.
        std: Normalisation std of the example inputs.

    Returns:
        The prepared module and the report.

    Raises:
        ExportError: The prepared model does not match the original.
        BadInputError: The model rejects the input shape.
    """
    import numpy as np
    import torch

    unknown = set(skip) - set(PASSES)
    if unknown:
        raise BadInputError(f"unknown prepare pass(es) {sorted(unknown)}", hint=f"passes: {', '.join(PASSES)}")
    original = settle_hook_weights(model)  # an old-style weight_norm model cannot be deep-copied otherwise
    model = model if inplace else copy.deepcopy(model)
    report = PrepareReport()
    c, h, w = input_shape[-3:]
    x = torch.from_numpy(natural_images(2, (c, h, w), mean, std, seed=12345))
    # Reference before anything changes (eval mode: what the user's model computes at inference).
    was_training = original.training
    original.eval()
    try:
        with torch.no_grad():
            ref = first_output(original(x)).float().numpy()
    except RuntimeError as exc:
        raise BadInputError(
            f"the model rejects input shape {[1, c, h, w]}: {str(exc).splitlines()[0][:200]}",
            hint="pass --input-shape N,C,H,W that the model accepts",
        ) from exc
    finally:
        original.train(was_training)
    if not np.isfinite(ref).all():
        raise _nonfinite_model_error(original, ref)
    if inplace:
        model.eval()

    # To fold again if a pair turns out wrong (inplace: the original is about to change).
    base = copy.deepcopy(original) if inplace and "fold_conv_bn" not in skip else None
    model = _run_passes(model, x, aux_heads, skip, report)
    check = _SelfCheck(original, x, ref)
    if check.passes(model, report):
        return model, report
    folded = report.get("fold_conv_bn")
    if folded is None or not folded.changed:
        raise check.error()
    base = base if base is not None else copy.deepcopy(original)
    # A fold that is wrong for one pair (something outside the modules reads or changes the convolution's
    # output, a convolution that computes its weight its own way...) must not refuse the whole model: each
    # folded pair is checked on its own, the wrong ones are skipped with the reason, and the rest folded again.
    wrong = _wrong_pairs(base, x, aux_heads, skip, folded.changed, check)
    if not wrong:
        raise check.error()
    report.passes = []
    model = _run_passes(base, x, aux_heads, skip, report, exclude=wrong)
    if check.passes(model, report):
        return model, report
    raise check.error()


def _run_passes(
    model: Any, x: Any, aux_heads: tuple[str, ...], skip: tuple[str, ...], report: PrepareReport,
    exclude: dict[str, str] | None = None,
) -> Any:
    """The passes, in order, on ``model`` (changed in place, or wrapped: the result is returned)."""
    from . import passes as P  # lazy: passes imports torch at import; keeps torch out of importing deployinc.prepare

    report.passes.append(P.eval_mode(model) if "eval" not in skip else PassRecord("eval", notes=["skipped"]))
    if "remove_aux_heads" not in skip:
        report.passes.append(P.remove_aux_heads(model, tuple(aux_heads)))
    model, rec = P.single_output(model, x)
    if rec.changed or rec.skipped:
        report.passes.append(rec)
    if "remove_dropout" not in skip:
        report.passes.append(P.remove_dropout(model))
    if "fold_conv_bn" not in skip:
        report.passes.append(P.fold_conv_bn(model, x, exclude=exclude))
    model.eval()
    return model


def _wrong_pairs(
    base: Any, x: Any, aux_heads: tuple[str, ...], skip: tuple[str, ...], pairs: list[str], check: _SelfCheck
) -> dict[str, str]:
    """BN name -> why, for each ``"conv <- bn"`` pair whose fold alone (on a fresh copy of ``base``) changes the
    model's output beyond the self-check's budget."""
    from . import passes as P  # lazy: passes imports torch at import; keeps torch out of importing deployinc.prepare

    wrong = {}
    for pair in pairs:
        conv_name, _, bn_name = pair.partition(" <- ")
        trial = _run_passes(copy.deepcopy(base), x, aux_heads, tuple(skip) + ("fold_conv_bn",), PrepareReport())
        P.fold_pair(trial, conv_name, bn_name)
        if not check.passes(trial, None):
            wrong[bn_name] = (
                f"folding it into {conv_name} changes the model's output (max_rel {check.last_max_rel:.1e}): "
                f"{conv_name}'s output is used in a way the fold cannot see"
            )
    return wrong


class _SelfCheck:
    """The prepared model against the original's eval-mode output on the same inputs: within 1e-5 of the
    logits' scale, or, for deep networks whose own float32 noise is larger, no further from a float64 run of the
    original than twice the original's own float32 error."""

    def __init__(self, original: Any, x: Any, ref: Any) -> None:
        self.original, self.x, self.ref = original, x, ref
        self.truth: Any = None
        self.cmp: Any = None
        self.own = self.ours = float("nan")
        self.last_max_rel = float("nan")

    def passes(self, model: Any, report: PrepareReport | None) -> bool:
        import numpy as np
        import torch

        model.eval()
        with torch.no_grad():
            out = first_output(model(self.x)).float().numpy()
        tol = Tolerance(max_rel=SELF_CHECK_MAX_REL, min_cosine=None, min_top1=None, name="prepare")
        self.cmp = compare_arrays("logits", self.ref, out, tol)
        self.last_max_rel = float(self.cmp.max_rel)
        if report is not None:
            report.self_check_max_rel = self.last_max_rel
        if self.cmp.passed and np.isfinite(out).all():
            return True
        # Deep networks have a float32 noise floor of their own (random-weight inception_v3: ~1.5e-5 of the
        # logits' scale between float32 and float64 runs of the *same* model). Judge the prepared model against a
        # float64 run of the original: it may not be further from it than twice the original's own float32 error.
        if self.truth is None:
            with torch.no_grad():
                self.truth = first_output(copy.deepcopy(self.original).eval().double()(self.x.double())).numpy()
        scale = float(np.abs(self.truth).max()) or 1.0
        self.own = float(np.abs(self.ref - self.truth).max()) / scale
        self.ours = float(np.abs(out - self.truth).max()) / scale
        if report is not None:
            report.self_check_float64 = {"original_fp32_vs_fp64": self.own, "prepared_fp32_vs_fp64": self.ours}
        return bool(np.isfinite(out).all() and self.ours <= max(SELF_CHECK_MAX_REL, 2 * self.own))

    def error(self) -> ExportError:
        return ExportError(
            f"the prepared model differs from the original: {'; '.join(self.cmp.failures)} "
            f"(float64 check: prepared {self.ours:.1e} vs the original's own float32 error {self.own:.1e})",
            hint="skip the pass that breaks it with --skip-pass fold_conv_bn and report the model",
        )


def _nonfinite_model_error(model: Any, ref: Any) -> Exception:
    """The model's own output holds NaN/Inf before any pass ran: the input (its weights) is at fault, not a pass.
    Names the parameters and buffers holding NaN/Inf, or says the weights are finite and the activations overflow."""
    import numpy as np

    nan, inf = int(np.isnan(ref).sum()), int(np.isinf(ref).sum())
    out = f"{nan} NaN, {inf} Inf of {ref.size} logits"
    bad = nonfinite_tensors(dict(model.state_dict()))
    if bad:
        return WeightsError(
            f"the model's weights hold non-finite values: {nonfinite_summary(bad)} (its output, before any deployinc pass: {out})",
            hint="the weights are broken (a training run that diverged, or a damaged file): use an earlier checkpoint, "
            "or train again; no --skip-pass helps",
        )
    return BadInputError(
        f"the model's own output holds non-finite values before any deployinc pass ran ({out}); its weights are "
        "finite, so its activations overflow float32 on natural-image inputs",
        hint="check the weights and the input normalisation (--mean/--std); no --skip-pass helps",
    )
