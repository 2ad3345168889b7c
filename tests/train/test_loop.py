"""``deployinc.train.loop`` as a library: the learning-rate schedules, the loss with auxiliary heads and label
smoothing, the augmentation, evaluation, held-out folder names, the settings checks, and one tiny training run.

Expected values are derived by hand in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deployinc.errors import BadInputError
from deployinc.train.data import Dataset
from deployinc.train.loop import TrainConfig, augment, compute_loss, epochs_text, evaluate, heldout_folder_names, lr_at, train


@pytest.fixture(autouse=True)
def _restore_threads():
    """train() sets torch's thread count: put it back for other tests."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# lr_at ------------------------------------------------------------------------------------------------------------


def test_cosine_warms_up_linearly_then_decays_to_zero():
    # total 103: warm-up int(0.03 * 103) = 3 steps at base * 1/3, 2/3, 3/3; then progress (step - 3) / 100
    assert lr_at(0, 103, 0.3, "cosine") == pytest.approx(0.1)
    assert lr_at(1, 103, 0.3, "cosine") == pytest.approx(0.2)
    assert lr_at(2, 103, 0.3, "cosine") == pytest.approx(0.3)
    assert lr_at(3, 103, 0.3, "cosine") == pytest.approx(0.3)  # progress 0: the peak
    assert lr_at(28, 103, 0.3, "cosine") == pytest.approx(0.3 * 0.5 * (1 + math.sqrt(0.5)))  # progress 1/4: cos(pi/4)
    assert lr_at(53, 103, 0.3, "cosine") == pytest.approx(0.15)  # progress 1/2: half the peak
    assert lr_at(78, 103, 0.3, "cosine") == pytest.approx(0.3 * 0.5 * (1 - math.sqrt(0.5)))
    assert lr_at(103, 103, 0.3, "cosine") == pytest.approx(0.0, abs=1e-15)
    assert lr_at(500, 103, 0.3, "cosine") == pytest.approx(0.0, abs=1e-15)  # past the end: stays at zero, no second cycle


def test_cosine_with_few_steps_warms_up_for_one():
    # total 21: int(0.63) = 0, so one warm-up step (at the full rate), then progress (step - 1) / 20
    assert lr_at(0, 21, 1.0, "cosine") == pytest.approx(1.0)
    assert lr_at(11, 21, 1.0, "cosine") == pytest.approx(0.5)
    assert lr_at(6, 21, 1.0, "cosine") == pytest.approx(0.5 * (1 + math.sqrt(0.5)))


def test_step_schedule_drops_tenfold_at_half_and_three_quarters():
    values = {s: lr_at(s, 100, 0.05, "step") for s in (0, 49, 50, 74, 75, 99)}
    assert values == pytest.approx({0: 0.05, 49: 0.05, 50: 0.005, 74: 0.005, 75: 0.0005, 99: 0.0005})


def test_constant_schedule_and_no_steps():
    assert [lr_at(s, 10, 0.2, "none") for s in (0, 5, 9, 10)] == [0.2] * 4
    assert lr_at(0, 0, 0.2, "cosine") == 0.2 and lr_at(3, 0, 0.2, "step") == 0.2


# compute_loss -----------------------------------------------------------------------------------------------------


def test_loss_of_plain_logits_by_hand():
    # logits [2, 0, 0], target 0: -log softmax_0 = log(e^2 + 2) - 2
    main = torch.tensor([[2.0, 0.0, 0.0]])
    loss, logits = compute_loss(main, torch.tensor([0]))
    assert logits is main
    assert float(loss) == pytest.approx(math.log(math.e**2 + 2) - 2, rel=1e-6)


def test_label_smoothing_by_hand():
    # smoothing e over K = 3 classes: (1 - e) * CE(target) + e/3 * sum_k -log p_k
    # with L = log(e^2 + 2): -log p_0 = L - 2, -log p_1 = -log p_2 = L, so the loss is L - 2 + 4e/3
    main = torch.tensor([[2.0, 0.0, 0.0]])
    loss, _ = compute_loss(main, torch.tensor([0]), label_smoothing=0.3)
    assert float(loss) == pytest.approx(math.log(math.e**2 + 2) - 2 + 0.4, rel=1e-6)


def test_aux_outputs_add_their_weighted_loss_and_non_tensors_are_ignored():
    # uniform aux logits over 3 classes: CE = log 3 whatever the target and the smoothing
    main = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    aux = torch.zeros(2, 3)
    y = torch.tensor([0, 1])
    base = math.log(math.e**2 + 2) - 2  # both samples are the hand case above
    loss, logits = compute_loss((main, aux, None, aux), y, aux_weight=0.5)
    assert logits is main
    assert float(loss) == pytest.approx(base + 2 * 0.5 * math.log(3), rel=1e-6)
    loss, _ = compute_loss([main, aux], y, aux_weight=0.25, label_smoothing=0.3)
    assert float(loss) == pytest.approx(base + 0.4 + 0.25 * math.log(3), rel=1e-6)
    assert float(compute_loss((main, aux), y, aux_weight=0.0)[0]) == pytest.approx(base, rel=1e-6)


def test_loss_matches_torch_on_random_logits_and_refuses_other_outputs():
    torch.manual_seed(0)
    main, a1 = torch.randn(4, 5), torch.randn(4, 5)
    y = torch.tensor([0, 4, 2, 2])
    ce = nn.functional.cross_entropy
    loss, _ = compute_loss((main, a1), y, aux_weight=0.3, label_smoothing=0.1)
    assert float(loss) == pytest.approx(float(ce(main, y, label_smoothing=0.1) + 0.3 * ce(a1, y, label_smoothing=0.1)), rel=1e-6)
    with pytest.raises(TypeError, match="dict"):
        compute_loss({"logits": main}, y)


# augment ----------------------------------------------------------------------------------------------------------


def _images(n=4, h=6, w=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_eval_augment_is_layout_and_normalisation_only():
    img = np.zeros((1, 2, 3, 3), np.uint8)  # H 2, W 3: not square, so a swapped H/W would show
    img[0, :, :, 0] = 255
    img[0, :, :, 2] = 51
    img[0, 1, 2, 1] = 102
    x = augment(img, (0.1, 0.2, 0.3), (0.5, 0.5, 0.25), np.random.default_rng(0), train=False)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 2, 3)
    # (v / 255 - mean) / std per channel: R (1 - 0.1) / 0.5 = 1.8, G (0 - 0.2) / 0.5 = -0.4, B (0.2 - 0.3) / 0.25 = -0.4
    assert torch.allclose(x[0, 0], torch.full((2, 3), 1.8))
    assert torch.allclose(x[0, 2], torch.full((2, 3), -0.4))
    assert float(x[0, 1, 1, 2]) == pytest.approx((0.4 - 0.2) / 0.5)  # the one bright G pixel stays at row 1, column 2
    assert float(x[0, 1, 0, 0]) == pytest.approx(-0.4)


def test_train_augment_is_a_seeded_crop_of_the_padded_image_maybe_flipped():
    imgs = _images(n=8)
    before = imgs.copy()
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    a = augment(imgs, mean, std, np.random.default_rng(7), train=True)
    b = augment(imgs, mean, std, np.random.default_rng(7), train=True)
    c = augment(imgs, mean, std, np.random.default_rng(8), train=True)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert np.array_equal(imgs, before)  # the data in memory is not changed
    assert a.shape == (8, 3, 6, 5)
    plain = augment(imgs, mean, std, np.random.default_rng(0), train=False)
    padded = nn.functional.pad(plain, (4, 4, 4, 4), value=(0 - 0.5) / 0.5)  # zero pixels, normalised
    seen = set()
    for i in range(8):
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if torch.equal(a[i], (lambda crop: crop.flip(2) if f else crop)(padded[i, :, dy:dy + 6, dx:dx + 5]))]
        assert matches, f"image {i} is not a 6x5 crop of the 4-pixel-padded image"
        seen.update(matches)
    assert {f for _, _, f in seen} == {False, True}  # some flipped, some not
    assert len({(dy, dx) for dy, dx, _ in seen}) > 1  # the offsets vary


# evaluate ---------------------------------------------------------------------------------------------------------


class Brightest(nn.Module):
    """Predicts the channel with the largest mean; optionally returns (logits, aux) like an aux-head model."""

    def __init__(self, aux: bool = False):
        super().__init__()
        self.aux = aux
        self.drop = nn.Dropout(0.9)  # would scramble nothing here, but must be off: evaluate sets eval mode

    def forward(self, x):
        logits = self.drop(x.mean((2, 3)))
        return (logits, -logits) if self.aux else logits


def _labelled(labels_true, labels_given) -> Dataset:
    imgs = np.zeros((len(labels_true), 4, 4, 3), np.uint8)
    for i, c in enumerate(labels_true):
        imgs[i, :, :, c] = 200
    return Dataset(imgs, np.asarray(labels_given, np.int64))


@pytest.mark.parametrize("aux", [False, True])
def test_evaluate_counts_top1_over_batches(aux):
    data = _labelled([0, 1, 2, 0, 1], [0, 1, 2, 1, 1])  # the fourth is mislabelled: 4 of 5 right
    model = Brightest(aux).train()
    assert evaluate(model, data, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), batch_size=2) == pytest.approx(0.8)  # batches 2 + 2 + 1
    assert not model.training
    assert evaluate(model, Dataset(np.zeros((0, 4, 4, 3), np.uint8), np.zeros(0, np.int64)), (0.0,) * 3, (1.0,) * 3) == 0.0


# small helpers ----------------------------------------------------------------------------------------------------


def test_heldout_folder_names_sort_in_index_order():
    assert heldout_folder_names(["ant", "bee", "cat"]) == ["ant", "bee", "cat"]  # already sorted: kept
    assert heldout_folder_names(["cat", "ant", "bee"]) == ["0_cat", "1_ant", "2_bee"]
    eleven = [f"c{10 - i}" for i in range(11)]  # c10, c9, ... c0: not sorted
    names = heldout_folder_names(eleven)
    assert names[0] == "00_c10" and names[10] == "10_c0"  # zero-padded: "10_" sorts after "09_"
    assert sorted(names) == names


def test_epochs_text():
    assert epochs_text(1) == "1 epoch"
    assert epochs_text(0) == "0 epochs" and epochs_text(5) == "5 epochs"


# train ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,pattern",
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"schedule": "linear"}, "unknown schedule 'linear'"),
        ({"epochs": 0}, "--epochs 0 must be at least 1"),
        ({"batch_size": 0}, "--batch-size 0 must be at least 1"),
        ({"lr": 0.0}, "--lr 0.0 must be a positive number"),
        ({"lr": float("nan")}, "--lr nan must be a positive number"),
        ({"aux_weight": -1.0}, "--aux-weight -1 must be a finite number >= 0"),
        ({"label_smoothing": 1.0}, r"--label-smoothing 1 in \[0, 1\)"),
        ({"weight_decay": float("inf")}, "--weight-decay inf must be a finite number >= 0"),
        ({"image_size": 100_000}, "--image-size 100000 is above the maximum"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, change, pattern):
    cfg = TrainConfig("depthwise_cifar", "synthetic:shapes", out=str(tmp_path / "m.pt"), threads=1, **change)
    with pytest.raises(BadInputError, match=pattern):
        train(cfg)
    assert list(tmp_path.iterdir()) == []


def test_one_tiny_epoch_records_the_schedule_and_the_accuracy(tmp_path):
    from deployinc.io import load_checkpoint

    out = tmp_path / "m.pt"
    res = train(TrainConfig("depthwise_cifar", "synthetic:shapes", out=str(out), epochs=1, batch_size=8, limit_train=16, limit_heldout=8,
                            threads=1, schedule="step", lr=0.01, optimizer="sgd"))
    rec = res.record
    assert res.checkpoint == out and out.is_file()
    assert (rec["epoch"], rec["epochs"], rec["train_images"], rec["heldout_images"], rec["num_classes"]) == (1, 1, 16, 8, 10)
    assert (rec["optimizer"], rec["schedule"], rec["weight_decay"], rec["aux_weight"], rec["batch_size"]) == ("sgd", "step", 5e-4, 0.3, 8)
    # 16 images in batches of 8: 2 steps; the last (step 1 of 2, half way) runs at 0.1 x the peak
    (h,) = rec["history"]
    assert h["lr"] == pytest.approx(0.001)
    assert res.accuracy == rec["accuracy"] == pytest.approx(h["heldout_acc"], abs=1e-6)
    assert round(h["heldout_acc"] * 8) == pytest.approx(h["heldout_acc"] * 8, abs=1e-5)  # a count out of 8 images
    assert 0.0 < h["train_loss"] < 20 and math.isfinite(h["train_loss"])
    sd, raw = load_checkpoint(out, with_extra=True)
    assert raw["record"]["history"] == rec["history"] and "optimizer" in raw
    from deployinc.models import create_model

    assert set(sd) == set(create_model("depthwise_cifar", num_classes=10).state_dict())
