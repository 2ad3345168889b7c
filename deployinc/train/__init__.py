"""Train a classifier on an ImageFolder, a local CIFAR-10 directory or a built-in synthetic dataset.

    from deployinc.train import TrainConfig, train
    result = train(TrainConfig("inception_cifar", "synthetic:shapes", out="ckpt.pt"))
    result.accuracy  # held-out top-1 after the last epoch

The checkpoint loads with :func:`deployinc.io.load_checkpoint` (weights-only) and exports with
``deployinc export inception_cifar --weights ckpt.pt``.
"""

from .data import DataSplit, Dataset, load_data
from .loop import DEFAULT_EPOCHS, TrainConfig, TrainResult, augment, compute_loss, evaluate, lr_at, train
from .progress import PlainReporter, Reporter, make_reporter
from .synthetic import SHAPE_CLASSES, SYNTHETIC

__all__ = [
    "DEFAULT_EPOCHS",
    "DataSplit",
    "Dataset",
    "PlainReporter",
    "Reporter",
    "SHAPE_CLASSES",
    "SYNTHETIC",
    "TrainConfig",
    "TrainResult",
    "augment",
    "compute_loss",
    "evaluate",
    "load_data",
    "lr_at",
    "make_reporter",
    "train",
]
