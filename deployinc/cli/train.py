"""``deployinc train``: train a classifier on an ImageFolder, a CIFAR-10 directory or a built-in synthetic set."""

from __future__ import annotations

import click

from ..core import limits
from . import groups as G
from .options import float_in, int_in


@click.command()
@click.argument("arch")
@G.training_data()
@G.out("Checkpoint file (default: ./<arch>.pt; with --resume, that file).")
@click.option("--epochs", type=int, default=None, callback=int_in(1, limits.EPOCHS_MAX, "5"), help="Total epochs (default 5; a resumed run goes on to this number).")
@click.option("--batch-size", type=int, default=None, callback=int_in(1, limits.BATCH_MAX, "32"), help="Batch size (default 32).")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default=None, help="Adam (default) or SGD with Nesterov momentum.")
@click.option("--lr", type=float, default=None, callback=float_in(0, None, lo_open=True, example="1e-3"), help="Peak learning rate (default 1e-3 Adam, 0.05 SGD).")
@click.option("--schedule", type=click.Choice(["cosine", "step", "none"]), default=None, help="Learning-rate schedule (default cosine).")
@click.option("--weight-decay", type=float, default=None, callback=float_in(0, None, example="5e-4"), help="Weight decay (default 0 Adam, 5e-4 SGD).")
@click.option("--aux-weight", type=float, default=None, callback=float_in(0, None, example="0.3"), help="Weight of each auxiliary classifier's loss (default 0.3).")
@click.option("--label-smoothing", type=float, default=None, callback=float_in(0, 1, hi_open=True, example="0.1"), help="Label smoothing (default 0).")
@G.num_classes("Expected number of classes (checked against the data).")
@click.option("--image-size", type=int, default=None, callback=int_in(limits.TRAIN_IMAGE_SIDE_MIN, limits.IMAGE_SIDE_MAX, "32"), help=f"Training image size, {limits.TRAIN_IMAGE_SIDE_MIN}..{limits.IMAGE_SIDE_MAX} (default: the model's input size).")
@G.weights("Initial weights (.pt/.pth/.safetensors); a classifier of another size is re-initialised.")
@click.option("--resume", default=None, help="Resume from a checkpoint of deployinc train (weights, optimizer, epoch).")
@G.seed("Seed of data generation, splits, shuffling, augmentation, init.", default=0)
@click.option("--val-split", type=float, default=0.2, show_default=True, callback=float_in(0, 1, lo_open=True, hi_open=True, example="0.2"), help="Held-out share of an ImageFolder without val/.")
@click.option("--limit-train", type=click.IntRange(min=1), default=None, help="Use at most this many training images.")
@click.option("--limit-heldout", type=click.IntRange(min=1), default=None, help="Use at most this many held-out images.")
@click.option("--export-heldout", default=None, type=click.Path(file_okay=False), help="Write the held-out images here (PNG, one folder per class).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; epoch lines only.")
@G.threads()
@G.force()
def train(
    arch: str,
    data: str,
    out: str | None,
    epochs: int | None,
    batch_size: int | None,
    optimizer: str | None,
    lr: float | None,
    schedule: str | None,
    weight_decay: float | None,
    aux_weight: float | None,
    label_smoothing: float | None,
    num_classes: int | None,
    image_size: int | None,
    weights: str | None,
    resume: str | None,
    seed: int,
    val_split: float,
    limit_train: int | None,
    limit_heldout: int | None,
    export_heldout: str | None,
    quiet: bool,
    threads: int | None,
    force: bool,
) -> None:
    """Train ARCH (a name from `deployinc models`) and save a checkpoint that `deployinc export --weights` reads.

    \b
      deployinc train inception_cifar --data synthetic:shapes
      deployinc train inception_cifar --data ~/data/cifar-10-batches-py --epochs 20 --out ckpt.pt
      deployinc train googlenet --data path/to/imagefolder --num-classes 5 --aux-weight 0.3 --epochs 5 --weights init.pth
      deployinc train inception_cifar --data synthetic:shapes --epochs 12 --resume ckpt.pt --out ckpt.pt
    """
    from .. import train as training  # lazy: train imports numpy; keeps it out of deployinc --help

    _check_memory(data, image_size, batch_size, limit_train, limit_heldout, training.synthetic.SYNTHETIC_SIZES)

    config = training.TrainConfig(
        arch=arch,
        data=data,
        out=out if out is not None else (resume if resume is not None else f"{arch}.pt"),
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        schedule=schedule,
        weight_decay=weight_decay,
        aux_weight=aux_weight,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
        image_size=image_size,
        weights=weights,
        resume=resume,
        seed=seed,
        threads=threads,
        val_split=val_split,
        limit_train=limit_train,
        limit_heldout=limit_heldout,
        export_heldout=export_heldout,
        force=force,
    )
    reporter = training.PlainReporter(every=10**9) if quiet else training.make_reporter()
    result = training.train(config, reporter)
    rec = result.record
    click.echo(
        f"{arch}: held-out accuracy {100 * rec['accuracy']:.2f}% after {training.loop.epochs_text(int(rec['epoch']))} "
        f"({rec['train_seconds']:.1f}s training); checkpoint {result.checkpoint}"
    )
    if result.heldout_written:
        click.echo(f"wrote {result.heldout_written} held-out images to {export_heldout}")


def _check_memory(
    data: str, image_size: int | None, batch_size: int | None, limit_train: int | None, limit_heldout: int | None,
    synthetic_sizes: dict[str, tuple[int, int]],
) -> None:
    """Refuse an image size or batch size whose data cannot fit, before anything is generated or read.

    Checked when given (the defaults are the model's own and fit): a batch of float32 images times
    :data:`deployinc.core.limits.ACTIVATION_FACTOR` (a training step keeps activations for the backward pass), and, for a
    synthetic set whose image count is known (``synthetic_sizes``: :data:`deployinc.train.synthetic.SYNTHETIC_SIZES`),
    every image as uint8 (the data is held in memory).
    """
    side = image_size
    if batch_size is not None:
        s = side if side is not None else 32  # the smallest input size of deployinc's trainable models
        limits.check_fits(
            f"--batch-size {batch_size}",
            limits.tensor_bytes(batch_size, (3, s, s)),
            f"{batch_size} images of 3 x {s} x {s} float32",
            factor=limits.ACTIVATION_FACTOR,
            factor_why=f"times ~{limits.ACTIVATION_FACTOR} for the activations a training step keeps",
            hint="use a smaller --batch-size (or --image-size), or a machine with more memory",
        )
    if side is not None and data.startswith("synthetic:"):
        sizes = synthetic_sizes.get(data.split(":", 1)[1])
        if sizes is not None:
            n = (limit_train if limit_train is not None else sizes[0]) + (limit_heldout if limit_heldout is not None else sizes[1])
            limits.check_fits(
                f"--image-size {side}",
                n * 3 * side * side,
                f"{n} images of {side} x {side} x 3 uint8 held in memory ({data})",
                hint="use a smaller --image-size (or fewer images: --limit-train, --limit-heldout), or a machine with more memory",
            )
