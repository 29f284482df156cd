import json
import pathlib

import keras
import kit
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from kerastl.cli import cli
from kerastl.models import freezing
from kerastl.models.classifier import TransferClassifier
from kerastl.train import lr_find
from kerastl.train.stage import Stage

FIXTURES = pathlib.Path(__file__).parent / "recipes"
# Small images keep the range tests' training steps cheap.
IMAGE_SIZE = 16


def test_smooth_is_a_debiased_moving_average():
    # By hand, beta 0.5: averages 0.5, 0.5, 1.25 over debiasing factors
    # 0.5, 0.75, 0.875.
    np.testing.assert_allclose(
        lr_find.smooth([1.0, 0.5, 2.0], beta=0.5), [1.0, 2 / 3, 10 / 7]
    )
    # Debiasing keeps a constant loss constant from the first step.
    np.testing.assert_allclose(lr_find.smooth([3.0, 3.0, 3.0]), [3.0] * 3)


# Learning rates 1e-6 ... 1 at half-decade steps; the loss is a parabola in
# log10(lr) with its minimum at 1e-2 (index 8). It falls from the first
# step (index 0) to index 8, so the valley's middle is index 4 (1e-4); the
# slope is steepest at the first step (1e-6); minimum/10 is 1e-3.
PARABOLA = (
    10.0 ** np.linspace(-6, 0, 13),
    (np.linspace(-6, 0, 13) + 2) ** 2,
    {},
    {"valley": 1e-4, "steep": 1e-6, "minimum/10": 1e-3},
)
# Rates 1e-7 ... 10, one per decade. The longest decreasing subsequence is
# 2.0, 1.99, 1.9, 1.5, 1.0, 0.8 (indices 0-6, the bump to 2.05 at index 2
# skipped): middle index 3, 1e-4. The largest drop is 1.5 -> 1.0 from
# index 4 (1e-3). The minimum 0.8 is at index 6 (1e-1).
NOISY_LRS = 10.0 ** np.arange(-7, 2)
NOISY = [2.0, 1.99, 2.05, 1.9, 1.5, 1.0, 0.8, 1.2, 5.0]


@pytest.mark.parametrize(
    "rates, losses, kwargs, expected",
    [
        PARABOLA,
        (
            NOISY_LRS,
            NOISY,
            {},
            {"valley": 1e-4, "steep": 1e-3, "minimum/10": 1e-2},
        ),
        # A trailing non-finite loss is ignored.
        (
            np.append(NOISY_LRS, 100.0),
            NOISY + [np.nan],
            {},
            {"valley": 1e-4, "steep": 1e-3, "minimum/10": 1e-2},
        ),
        # Without the last three steps: indices 0-5, minimum 1.0 at index 5
        # (1e-2), valley 0-5 with middle index 2 (1e-5), steepest still 4.
        (
            NOISY_LRS,
            NOISY,
            {"skip_end": 3},
            {"valley": 1e-5, "steep": 1e-3, "minimum/10": 1e-3},
        ),
    ],
    ids=["parabola", "noisy", "nan-end", "skip-end"],
)
def test_suggest_hand_worked_curves(rates, losses, kwargs, expected):
    suggestions = lr_find.suggest(rates, losses, **kwargs)
    assert list(suggestions) == list(expected)
    for name, rate in expected.items():
        np.testing.assert_allclose(suggestions[name], rate, rtol=1e-9)


def test_suggest_needs_two_finite_losses():
    with pytest.raises(ValueError, match="Lower start_lr"):
        lr_find.suggest([1e-3, 1e-2], [1.0, np.inf])


def test_bad_range_is_a_clear_error():
    with pytest.raises(ValueError, match="larger end_lr"):
        lr_find.lr_find(None, None, start_lr=1.0, end_lr=0.1)


def _classifier():
    backbone, converter = kit.tiny_resnet(IMAGE_SIZE)
    return TransferClassifier(
        backbone=backbone, image_converter=converter, num_classes=3
    )


def _dataset(images, labels, batch_size):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        batch_size
    )


def test_diverges_early_and_leaves_the_model_as_it_was():
    model = _classifier()
    model.unfreeze_backbone(last_n=1)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    # Random labels: the loss cannot fall to zero, so a huge rate blows it up.
    rng = np.random.default_rng(0)
    dataset = _dataset(
        kit.random_images(16, IMAGE_SIZE), rng.integers(0, 3, size=16), 8
    )
    # An optimizer part-way through training: slots built, steps counted.
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    optimizer.iterations.assign(7)
    slots = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]
    config = optimizer.get_config()
    weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
    trainable = [w.trainable for w in model.weights]
    audit = freezing.trainable_audit(model)

    result = lr_find.lr_find(
        model,
        dataset,
        Stage(train="head", optimizer="sgd"),
        start_lr=1e-3,
        end_lr=1e6,
        num_steps=30,
        verbose=0,
    )

    steps = len(result.losses)
    assert result.stopped_early and steps < 30
    np.testing.assert_allclose(
        result.learning_rates, np.geomspace(1e-3, 1e6, 30)[:steps], rtol=1e-5
    )
    # It stopped at the first step whose smoothed loss passed 4x the lowest
    # one so far.
    smoothed = np.asarray(result.smoothed)
    running_min = np.minimum.accumulate(smoothed)
    assert np.flatnonzero(smoothed > 4 * running_min).tolist() == [steps - 1]

    for before, after in zip(weights, model.weights, strict=True):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    # Same trainable weights and BatchNorm modes, so `fit` has nothing to
    # recompile.
    assert [w.trainable for w in model.weights] == trainable
    assert freezing.trainable_audit(model) == audit
    assert model.optimizer is optimizer
    assert optimizer.get_config() == config
    for before, after in zip(slots, optimizer.variables, strict=True):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    assert int(optimizer.iterations) == 7


def test_records_each_batch_loss_before_its_update():
    model = _classifier()
    images = kit.random_images(8, IMAGE_SIZE)
    labels = np.array([0, 0, 0, 0, 2, 2, 2, 2])
    # Two batches with different losses; rates so small the weights barely
    # move, so every step's loss is its batch's loss at the start weights
    # (a running mean over the epoch would blend the two). Label smoothing
    # 0.1 over 3 classes: targets 0.1 / 3, and 0.9 + 0.1 / 3 for the label.
    probs = model.predict(images, verbose=0)
    targets = np.full((8, 3), 0.1 / 3)
    targets[np.arange(8), labels] += 0.9
    example_loss = -(targets * np.log(probs)).sum(axis=1)
    batch_loss = [example_loss[:4].mean(), example_loss[4:].mean()]

    result = lr_find.lr_find(
        model,
        _dataset(images, labels, 4),
        Stage(train="head", optimizer="sgd", momentum=0.0),
        start_lr=1e-7,
        end_lr=1e-6,
        num_steps=5,
        diverge=1e6,
        label_smoothing=0.1,
        verbose=0,
    )

    # The dataset's two batches, cycled.
    expected = [batch_loss[step % 2] for step in range(5)]
    np.testing.assert_allclose(result.losses, expected, rtol=1e-4)
    np.testing.assert_allclose(
        result.learning_rates, np.geomspace(1e-7, 1e-6, 5), rtol=1e-5
    )
    assert not result.stopped_early


def test_cli_writes_plot_and_curve(tmp_path):
    preset = tmp_path / "resnet_tiny"
    kit.save_tiny_preset("resnet", preset)
    out = tmp_path / "lr"
    runner = CliRunner()
    args = ["lr-find", str(FIXTURES / "valid.py"), "--set", f"preset={preset}"]
    args += ["--set", "batch_size=4"]
    result = runner.invoke(cli, [*args, "--stage", "3"])
    assert result.exit_code == 1
    assert "2 stage(s)" in result.output

    result = runner.invoke(
        cli,
        [*args, "--smoke", "--stage", "2", "--output-dir", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "not trained first" in result.output
    png = (out / "lr_find.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    curve = json.loads((out / "lr_find.json").read_text())
    assert curve["stage"] == 2
    assert curve["method"] == "valley"
    assert set(curve["alternatives"]) == {"steep", "minimum/10"}
    steps = len(curve["losses"])
    assert steps == len(curve["smoothed"]) <= lr_find.SMOKE_STEPS
    np.testing.assert_allclose(
        curve["learning_rates"],
        np.geomspace(1e-7, 10.0, lr_find.SMOKE_STEPS)[:steps],
        rtol=1e-5,
    )
    # The valley suggestion is one of the rates tried, and printed.
    assert np.isclose(curve["learning_rates"], curve["suggestion"]).any()
    assert f"learning_rate={curve['suggestion']:.3g}" in result.output
