"""The training loop: data in memory, tutorial augmentation, Adam or SGD with a schedule, auxiliary losses,
held-out accuracy every epoch, an atomic checkpoint after every epoch, and exact resumption.

Augmentation is the tutorials': a random crop of the image size from the image padded by 4 zero pixels, a random
horizontal flip, and normalisation with the model's mean and std. Auxiliary classifiers (GoogLeNet's ``aux1`` and
``aux2``, Inception v3's ``AuxLogits``) add ``aux_weight`` times their cross-entropy to the loss; they are kept in
the checkpoint (for resuming) and dropped by ``deployinc export``.

Every random choice of epoch ``e`` (shuffle, crops, flips, dropout) is seeded from ``(seed, e)``, so a run resumed
after epoch ``e`` goes on exactly as the uninterrupted run would.

The checkpoint is a dict of tensors and plain Python values, loadable with ``torch.load(weights_only=True)``
(:func:`deployinc.io.load_checkpoint`): ``state_dict``, ``optimizer`` (its state dict) and ``record`` (the
training record: arch, data, epochs, accuracy, seed, num_classes, history...).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..core.limits import IMAGE_SIDE_MAX
from ..errors import BadInputError, OutputExistsError, WeightsError
from ..io import atomic_write_bytes, check_output_path, load_checkpoint, save_checkpoint
from ..models.loading import keep_metadata, load_state_into
from ..models.registry import create_model, get_model_info
from .data import DataSplit, Dataset, load_data
from .progress import Reporter

DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}
DEFAULT_WEIGHT_DECAY = {"adam": 0.0, "sgd": 5e-4}
SCHEDULES = ("cosine", "step", "none")
OPTIMIZERS = ("adam", "sgd")
#: Epochs of ``deployinc train inception_cifar --data synthetic:shapes`` (>= 90 % held-out on 2 CPU cores, < 5 min).
DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 32
CHECKPOINT_FORMAT = 1


def epochs_text(n: int) -> str:
    """``1 epoch``, ``5 epochs``: for messages."""
    return f"{n} epoch" if n == 1 else f"{n} epochs"


@dataclass
class TrainConfig:
    """Settings of one training run. ``None`` means: the resumed checkpoint's value, else the default.

    Attributes:
        arch: Registry name of the architecture.
        data: ``synthetic:NAME``, an ImageFolder or a CIFAR-10 directory.
        out: Checkpoint path.
        epochs: Total epochs (a resumed run goes on to this number).
        batch_size: Batch size.
        optimizer: ``adam`` or ``sgd`` (momentum 0.9, Nesterov).
        lr: Peak learning rate (1e-3 Adam, 0.05 SGD).
        schedule: ``cosine`` (with a short warm-up), ``step`` (x0.1 at 50 % and 75 %) or ``none``.
        weight_decay: L2 weight decay (0 Adam, 5e-4 SGD).
        aux_weight: Weight of each auxiliary classifier's loss.
        label_smoothing: Label smoothing of the cross-entropy (Inception v3 used 0.1).
        num_classes: Expected class count (must agree with the data).
        image_size: Training image size (default: the model's input size).
        weights: Initial weights (a .pt/.pth/.safetensors file); a classifier of another class count is re-initialised.
        resume: Checkpoint to resume from.
        seed: Seed of everything random.
        threads: torch intra-op threads (default: the CPUs this process may use).
        val_split: Held-out share of an ImageFolder without a val/ folder.
        limit_train: Use at most this many training images.
        limit_heldout: Use at most this many held-out images.
        export_heldout: Folder to write the held-out images to (PNG, one subfolder per class, named so that sorted names follow the class indices).
        force: Overwrite existing outputs.
    """

    arch: str
    data: str
    out: str
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    aux_weight: float | None = None
    label_smoothing: float | None = None
    num_classes: int | None = None
    image_size: int | None = None
    weights: str | None = None
    resume: str | None = None
    seed: int = 0
    threads: int | None = None
    val_split: float = 0.2
    limit_train: int | None = None
    limit_heldout: int | None = None
    export_heldout: str | None = None
    force: bool = False


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        checkpoint: Path of the checkpoint written.
        record: The training record stored in it.
        heldout_written: Number of held-out images written with ``export_heldout``.
        notes: Data and weights notes.
    """

    checkpoint: Path
    record: dict[str, Any]
    heldout_written: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """Held-out accuracy after the last epoch (0..1)."""
        return float(self.record["accuracy"])


def compute_loss(output: Any, target: Any, aux_weight: float = 0.3, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """Cross-entropy of the main logits plus ``aux_weight`` x each auxiliary classifier's cross-entropy.

    Args:
        output: A logits tensor, or a tuple/namedtuple whose first entry is the main logits and whose other tensor
            entries are auxiliary logits (torchvision's ``GoogLeNetOutputs``, ``InceptionOutputs``).
        target: int64 class indices.
        aux_weight: Weight of each auxiliary loss.
        label_smoothing: Label smoothing.

    Returns:
        ``(loss, main_logits)``.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(output, torch.Tensor):
        main, aux = output, []
    elif isinstance(output, (tuple, list)):
        main = output[0]
        aux = [t for t in output[1:] if isinstance(t, torch.Tensor)]
    else:
        raise TypeError(f"model output of type {type(output).__name__} is neither logits nor a tuple of logits")
    loss = F.cross_entropy(main, target, label_smoothing=label_smoothing)
    for a in aux:
        loss = loss + aux_weight * F.cross_entropy(a, target, label_smoothing=label_smoothing)
    return loss, main


def lr_at(step: int, total: int, base: float, schedule: str) -> float:
    """Learning rate at optimizer step ``step`` of ``total``: cosine with a 3 % linear warm-up, step, or constant."""
    if schedule == "none" or total <= 0:
        return base
    if schedule == "step":
        frac = step / total
        return base * (0.01 if frac >= 0.75 else 0.1 if frac >= 0.5 else 1.0)
    warm = max(1, int(0.03 * total))
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def augment(images: np.ndarray, mean: Any, std: Any, rng: np.random.Generator, train: bool) -> Any:
    """uint8 N x H x W x 3 -> normalised float N x 3 x H x W; with ``train``, pad-4 random crop and random flip."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if train:
        n, _, h, w = x.shape
        pad = 4
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
        flips = rng.random(n) < 0.5
        out = torch.empty_like(x)
        for i in range(n):
            dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
            crop = padded[i, :, dy : dy + h, dx : dx + w]
            out[i] = crop.flip(2) if flips[i] else crop
        x = out
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


def evaluate(model: Any, data: Dataset, mean: Any, std: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``data``."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            x = augment(data.images[i : i + batch_size], mean, std, np.random.default_rng(0), train=False)
            out = model(x)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            correct += int((logits.argmax(1) == torch.from_numpy(data.labels[i : i + batch_size])).sum())
    return correct / max(1, len(data))


def _load_init_weights(model: Any, path: str, arch: str, num_classes: int) -> list[str]:
    """Load ``path`` into ``model``; classifier tensors of another class count are re-initialised, with a note."""
    sd = load_checkpoint(path)
    own = model.state_dict()
    notes = []
    dropped = []
    for k, v in list(sd.items()):
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            if v.dim() >= 1 and own[k].dim() == v.dim() and own[k].shape[0] == num_classes and v.shape[1:] == own[k].shape[1:]:
                dropped.append(k)
                del sd[k]
                continue
            raise WeightsError(
                f"weights {path} do not fit {arch}: {k!r} has shape {tuple(v.shape)}, the model {tuple(own[k].shape)}",
                hint=f"is the checkpoint for {arch}?",
            )
    aux_prefixes = tuple(f"{n}." for n in ("aux1", "aux2", "AuxLogits", "aux_classifier"))
    missing = [k for k in own if k not in sd and k not in dropped and not k.endswith("num_batches_tracked")]
    missing_core = [k for k in missing if not k.startswith(aux_prefixes)]
    unexpected = [k for k in sd if k not in own and not k.endswith("num_batches_tracked")]
    if missing_core or unexpected:
        what = f"missing {missing_core[0]!r}" if missing_core else f"unexpected {unexpected[0]!r}"
        n = len(missing_core) + len(unexpected) - 1
        raise WeightsError(
            f"weights {path} do not fit {arch}: {what}" + (f" and {n} more" if n else ""),
            hint=f"is the checkpoint for {arch}? keys must match model.state_dict()",
        )

    model.load_state_dict(keep_metadata({k: v for k, v in sd.items() if k in own}, sd, own), strict=False)
    if dropped:
        notes.append(f"re-initialised {', '.join(dropped)} for {num_classes} classes")
    aux_missing = [k for k in missing if k.startswith(aux_prefixes)]
    if aux_missing:
        notes.append(f"{len(aux_missing)} auxiliary-head tensors not in {path}: those heads start from random weights")
    return notes


def heldout_folder_names(classes: list[str]) -> list[str]:
    """Folder name of each class index: the class name where the names already sort in index order (an ImageFolder),
    else ``<index>_<name>`` (synthetic:shapes, CIFAR-10), so that a reader numbering sorted folder names, as
    torchvision's ImageFolder and ``verify --labels`` do, gets the training indices back."""
    if sorted(classes) == list(classes):
        return list(classes)
    width = len(str(len(classes) - 1))
    return [f"{i:0{width}d}_{c}" for i, c in enumerate(classes)]


def _export_heldout(folder: Path, data: Dataset, classes: list[str], force: bool) -> int:
    """Write held-out images as PNG under ``folder/<class>/`` (see :func:`heldout_folder_names`; atomic writes);
    return how many."""
    import io as _io

    from PIL import Image

    width = max(5, len(str(len(data))))
    names = heldout_folder_names(classes)
    for c in names:
        (folder / c).mkdir(parents=True, exist_ok=True)
    for i in range(len(data)):
        buf = _io.BytesIO()
        Image.fromarray(data.images[i]).save(buf, format="PNG")
        atomic_write_bytes(folder / names[int(data.labels[i])] / f"{i:0{width}d}.png", buf.getvalue(), force=force)
    return len(data)


def _initial_record(
    cfg: Any, data: Any, info: Any, hp: dict[str, Any], record0: dict[str, Any], threads: int, data_seconds: float,
    mean: tuple[float, ...], std: tuple[float, ...],
) -> dict[str, Any]:  # fmt: skip
    """The training record saved in every checkpoint (what, on what, how), continued from a resumed one."""
    import torch

    optimizer_name, schedule, epochs, batch_size = hp["optimizer"], hp["schedule"], hp["epochs"], hp["batch_size"]
    lr, weight_decay, aux_weight, label_smoothing = hp["lr"], hp["weight_decay"], hp["aux_weight"], hp["label_smoothing"]
    image_size, seed, start_epoch = hp["image_size"], hp["seed"], hp["start_epoch"]
    num_classes = data.num_classes
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": cfg.arch,
        "data": data.source,
        "data_kind": data.kind,
        "classes": list(data.classes),
        "num_classes": num_classes,
        "train_images": len(data.train),
        "heldout_images": len(data.heldout),
        "skipped_images": data.skipped,
        "image_size": image_size,
        "input_size": [3, image_size, image_size],
        "mean": list(mean),
        "std": list(std),
        "epochs": epochs,
        "epoch": start_epoch,
        "accuracy": float(record0.get("accuracy", 0.0)),
        "history": list(record0.get("history", [])),
        "seed": seed,
        "optimizer": optimizer_name,
        "lr": lr,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "aux_weight": aux_weight,
        "label_smoothing": label_smoothing,
        "aux_heads": list(info.aux_heads),
        "weights": str(cfg.weights) if cfg.weights else record0.get("weights"),
        "threads": threads,
        "deployinc": __version__,
        "torch": str(torch.__version__),
        "train_seconds": float(record0.get("train_seconds", 0.0)),
        "data_seconds": round(data_seconds, 3),
    }


def _hyperparameters(cfg: Any, record0: dict[str, Any], info: Any, resume_path: Path | None) -> dict[str, Any]:
    """The training settings: the config's, else the resumed record's, else the defaults; each checked.

    Raises:
        BadInputError: A setting out of range, or a resumed run already at --epochs.
    """
    def pick(name: str, default: Any) -> Any:
        value = getattr(cfg, name)
        if value is not None:
            return value
        return record0.get(name, default)

    optimizer_name = str(pick("optimizer", "adam")).lower()
    if optimizer_name not in OPTIMIZERS:
        raise BadInputError(f"unknown optimizer {optimizer_name!r}", hint=f"use {' or '.join(OPTIMIZERS)}")
    schedule = str(pick("schedule", "cosine")).lower()
    if schedule not in SCHEDULES:
        raise BadInputError(f"unknown schedule {schedule!r}", hint=f"use one of {', '.join(SCHEDULES)}")
    epochs = int(pick("epochs", DEFAULT_EPOCHS))
    batch_size = int(pick("batch_size", DEFAULT_BATCH_SIZE))
    lr = float(pick("lr", DEFAULT_LR[optimizer_name]))
    weight_decay = float(pick("weight_decay", DEFAULT_WEIGHT_DECAY[optimizer_name]))
    aux_weight = float(pick("aux_weight", 0.3))
    label_smoothing = float(pick("label_smoothing", 0.0))
    image_size = int(pick("image_size", info.input_size[1]))
    seed = int(record0.get("seed", cfg.seed)) if resume_path is not None else int(cfg.seed)
    for what, v, lo in (("--epochs", epochs, 1), ("--batch-size", batch_size, 1)):
        if v < lo:
            raise BadInputError(f"{what} {v} must be at least {lo}", hint=f"e.g. {what} {max(lo, 8)}")
    if lr <= 0 or not math.isfinite(lr):
        raise BadInputError(f"--lr {lr} must be a positive number", hint="e.g. --lr 1e-3")
    if not (math.isfinite(aux_weight) and aux_weight >= 0) or not 0.0 <= label_smoothing < 1.0:  # NaN fails both
        raise BadInputError(
            f"--aux-weight {aux_weight:g} must be a finite number >= 0 and --label-smoothing {label_smoothing:g} in [0, 1)",
            hint="e.g. --aux-weight 0.3 --label-smoothing 0.1",
        )
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise BadInputError(f"--weight-decay {weight_decay:g} must be a finite number >= 0", hint="allowed: >= 0; e.g. --weight-decay 5e-4")

    if image_size > IMAGE_SIDE_MAX:
        raise BadInputError(f"--image-size {image_size} is above the maximum {IMAGE_SIDE_MAX}", hint=f"allowed: 8..{IMAGE_SIDE_MAX}; e.g. --image-size 32")
    start_epoch = int(record0.get("epoch", 0))
    if resume_path is not None and start_epoch >= epochs:
        raise BadInputError(
            f"--resume {resume_path} has already trained {epochs_text(start_epoch)} (--epochs {epochs})",
            hint=f"pass --epochs larger than {start_epoch} to train on",
        )
    return {
        "optimizer": optimizer_name, "schedule": schedule, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "aux_weight": aux_weight, "label_smoothing": label_smoothing,
        "image_size": image_size, "seed": seed, "start_epoch": start_epoch,
    }  # fmt: skip


def _resumed(resume_path: Path | None, arch: str) -> tuple[dict[str, Any], Any]:
    """(training record, (state dict, optimizer state)) of a ``--resume`` checkpoint, or ({}, None) without one.

    Raises:
        WeightsError: Not a deployinc training checkpoint, or one of another architecture.
    """
    if resume_path is None:
        return {}, None
    sd, raw = load_checkpoint(resume_path, with_extra=True)
    record0 = raw.get("record") if isinstance(raw, dict) and isinstance(raw.get("record"), dict) else {}
    if not record0:
        raise WeightsError(
            f"--resume {resume_path} has no training record",
            hint="resume only from a checkpoint written by deployinc train; use --weights to start from other weights",
        )
    if record0.get("arch") != arch:
        raise WeightsError(
            f"--resume {resume_path} is a checkpoint of {record0.get('arch')!r}, not {arch!r}",
            hint=f"train {record0.get('arch')} to resume it, or use --weights to start {arch} from other weights",
        )
    return record0, (sd, raw.get("optimizer"))


def _run_epochs(
    model: Any, opt: Any, data: Any, record: dict[str, Any], reporter: Any, out: Path, overwrite: bool, start_epoch: int,
    epochs: int, batch_size: int, lr: float, schedule: str, seed: int, aux_weight: float, label_smoothing: float,
    mean: tuple[float, ...], std: tuple[float, ...],
) -> None:  # fmt: skip
    """The epochs from ``start_epoch``: train, evaluate on the held-out set, save the checkpoint after each."""
    import torch

    channels_last = True
    force, same_file = overwrite, False
    n = len(data.train)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * epochs
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            rng = np.random.default_rng([seed, epoch])
            torch.manual_seed(seed * 100_003 + epoch)
            order = rng.permutation(n)
            model.train()
            reporter.epoch_start(epoch + 1, epochs, steps_per_epoch)
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(steps_per_epoch):
                idx = np.sort(order[b * batch_size : (b + 1) * batch_size])
                x = augment(data.train.images[idx], mean, std, rng, train=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(data.train.labels[idx])
                step = epoch * steps_per_epoch + b
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total_steps, lr, schedule)
                output = model(x)
                loss, logits = compute_loss(output, y, aux_weight, label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise BadInputError(
                        f"the loss became {loss_value} in epoch {epoch + 1}",
                        hint="lower --lr, or check the data",
                    )
                loss_sum += loss_value * len(idx)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(idx)
                reporter.step(b + 1, loss_sum / seen, correct / seen)
            heldout_acc = evaluate(model, data.heldout, mean, std)
            seconds = time.perf_counter() - t0
            summary = {
                "epoch": epoch + 1,
                "epochs": epochs,
                "train_loss": round(loss_sum / max(1, seen), 6),
                "train_acc": round(correct / max(1, seen), 6),
                "heldout_acc": round(heldout_acc, 6),
                "lr": float(opt.param_groups[0]["lr"]),
                "seconds": round(seconds, 3),
            }
            record["history"].append(summary)
            record["epoch"] = epoch + 1
            record["accuracy"] = heldout_acc
            record["train_seconds"] = round(record["train_seconds"] + seconds, 3)
            reporter.epoch_end(summary)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            # After the first save the file is ours: later epochs replace it.
            save_checkpoint(out, {"state_dict": state, "optimizer": opt.state_dict(), "record": record},
                            force=force or same_file or epoch > start_epoch)
    finally:
        reporter.close()


def _check_heldout_dir(path: Path, force: bool) -> None:
    if path.exists() and not path.is_dir():
        raise BadInputError(f"--export-heldout {path} is not a folder", hint="give a folder path")
    if not path.parent.exists():
        raise BadInputError(f"folder {path.parent} does not exist", hint="create it first, or choose another --export-heldout")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise OutputExistsError(f"--export-heldout {path} is not empty", hint="pass --force, or choose an empty folder")


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def train(config: TrainConfig, reporter: Reporter | None = None) -> TrainResult:
    """Train ``config.arch`` on ``config.data`` and save the checkpoint to ``config.out``.

    All input is checked before anything is written: the output paths, the architecture, the resumed checkpoint,
    the data and the class count.

    Raises:
        BadInputError: Bad data, paths or settings (with a hint).
        ModelSpecError: Unknown architecture.
        WeightsError: ``weights`` or ``resume`` cannot be read or do not fit (another architecture).
    """
    import torch

    reporter = reporter or Reporter()
    cfg = config
    threads = cfg.threads or _default_threads()
    torch.set_num_threads(threads)

    # ---- check everything before writing anything ----
    out = Path(os.path.expanduser(cfg.out))
    resume_path = Path(os.path.expanduser(cfg.resume)) if cfg.resume else None
    same_file = resume_path is not None and out.exists() and resume_path.exists() and out.resolve() == resume_path.resolve()
    check_output_path(out, force=cfg.force or same_file)
    heldout_dir = Path(os.path.expanduser(cfg.export_heldout)) if cfg.export_heldout else None
    if heldout_dir is not None:
        _check_heldout_dir(heldout_dir, cfg.force)
    info = get_model_info(cfg.arch)

    record0, resume_state = _resumed(resume_path, cfg.arch)

    hp = _hyperparameters(cfg, record0, info, resume_path)
    optimizer_name, schedule, epochs, batch_size = hp["optimizer"], hp["schedule"], hp["epochs"], hp["batch_size"]
    lr, weight_decay, aux_weight, label_smoothing = hp["lr"], hp["weight_decay"], hp["aux_weight"], hp["label_smoothing"]
    image_size, seed, start_epoch = hp["image_size"], hp["seed"], hp["start_epoch"]

    t_data = time.perf_counter()
    data: DataSplit = load_data(
        cfg.data, image_size=image_size, seed=seed, val_split=cfg.val_split,
        limit_train=cfg.limit_train, limit_heldout=cfg.limit_heldout,
    )
    data_seconds = time.perf_counter() - t_data
    if len(data.train) == 0:
        raise BadInputError(f"--data {cfg.data} has no training images", hint="check --data and --limit-train")
    num_classes = data.num_classes
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise BadInputError(
            f"--num-classes {cfg.num_classes} contradicts the data: {cfg.data} has {num_classes} classes",
            hint=f"drop --num-classes, or pass --num-classes {num_classes}",
        )
    if resume_path is not None and int(record0.get("num_classes", num_classes)) != num_classes:
        raise WeightsError(
            f"--resume {resume_path} was trained for {record0.get('num_classes')} classes; {cfg.data} has {num_classes}",
            hint="resume with the data it was trained on",
        )

    # ---- model, weights, optimizer ----
    torch.manual_seed(seed)
    model = create_model(cfg.arch, num_classes=num_classes)
    notes = list(data.notes)
    if cfg.weights and resume_path is None:
        notes += _load_init_weights(model, cfg.weights, cfg.arch, num_classes)
    if resume_state is not None:
        load_state_into(model, resume_state[0], info.with_overrides(num_classes=num_classes), str(resume_path))
    mean, std = tuple(info.mean), tuple(info.std)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer_name == "adam":
        opt: Any = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if resume_state is not None and isinstance(resume_state[1], dict):
        try:
            opt.load_state_dict(resume_state[1])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise WeightsError(
                f"--resume {resume_path}: its optimizer state does not fit ({exc})",
                hint=f"resume with the optimizer it was trained with ({record0.get('optimizer')})",
            ) from exc
    model = model.to(memory_format=torch.channels_last)

    record = _initial_record(cfg, data, info, hp, record0, threads, data_seconds, mean, std)
    reporter.start(
        f"training {cfg.arch} on {data.source}: {len(data.train)} training / {len(data.heldout)} held-out images, "
        f"{num_classes} classes, {image_size}x{image_size}; {optimizer_name} lr {lr:g} ({schedule}), batch {batch_size}, "
        f"epochs {start_epoch + 1}..{epochs}, {threads} threads"
        + (f"; {'; '.join(notes)}" if notes else "")
    )

    _run_epochs(model, opt, data, record, reporter, out, cfg.force or same_file, start_epoch, epochs, batch_size, lr, schedule,
                seed, aux_weight, label_smoothing, mean, std)
    written = 0
    if heldout_dir is not None:
        written = _export_heldout(heldout_dir, data.heldout, data.classes, cfg.force)
    return TrainResult(checkpoint=out, record=record, heldout_written=written, notes=notes)
