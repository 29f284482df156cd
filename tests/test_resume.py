"""Runs survive faults: checkpoints, resume, early stopping, NaN losses."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import kit
import numpy as np
import pytest

import kerastl
from kerastl import Stage
from kerastl import TransferClassifier
from kerastl.data import Augment
from kerastl.data import DataSpec
from kerastl.data import load_data
from kerastl.errors import TrainingDiverged

STAGES = (
    Stage(epochs=2, train="head", learning_rate=1e-2, name="head"),
    Stage(
        epochs=2,
        train=1,
        optimizer="adam",
        learning_rate=1e-3,
        schedule="cosine",
        warmup_fraction=0.25,
        name="last",
    ),
)
BATCHES_PER_EPOCH = 6
DROPOUT = 0.3


def build():
    keras.utils.set_random_seed(0)
    backbone, converter = kit.tiny_resnet()
    return TransferClassifier(
        backbone, num_classes=3, image_converter=converter, dropout=DROPOUT
    )


def bundle(augment=True):
    """48 shuffled training images in 6 batches; flips and crops when
    `augment`, so a resumed run must replay the data order exactly."""
    images, labels = kit.color_images(48, num_classes=3)
    spec = DataSpec(
        "arrays",
        arrays={
            "train": (images, labels),
            "validation": (images[:12], labels[:12]),
        },
    )
    return load_data(
        spec,
        image_size=(32, 32),
        batch_size=8,
        multi_label=False,
        seed=0,
        augment=Augment(flip=augment, random_resized_crop=augment),
    )


class AtBatch(keras.callbacks.Callback):
    """Calls `action(model)` after `at` training batches, counted across
    epochs and fits."""

    def __init__(self, at, action):
        super().__init__()
        self.at = at
        self.action = action
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            self.action(self.model)


def ctrl_c(model):
    raise KeyboardInterrupt


def nan_head(model):
    kernel = model.get_layer("predictions").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def fit(checkpoint_dir, callbacks=(), augment=True, **kwargs):
    model = build()
    data = bundle(augment)
    rows = kerastl.fine_tune(
        model,
        data.splits["train"],
        data.splits["validation"],
        STAGES,
        callbacks=list(callbacks),
        checkpoint_dir=checkpoint_dir,
        seed=0,
        print_fn=lambda _: None,
        verbose=0,
        **kwargs,
    )
    return model, rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return fit(tmp_path_factory.mktemp("full") / "checkpoint")


@pytest.mark.parametrize(
    "at",
    [
        # Mid-epoch 2 of the head stage: its optimizer state comes back.
        BATCHES_PER_EPOCH + 3,
        # Mid-epoch 4: a warmup+cosine schedule half done. (Resuming at a
        # stage's start is covered by the feature-cache test below.)
        3 * BATCHES_PER_EPOCH + 4,
    ],
)
def test_ctrl_c_then_resume_matches_an_uninterrupted_run(
    tmp_path, uninterrupted, at
):
    checkpoint_dir = tmp_path / "checkpoint"
    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint_dir, callbacks=[AtBatch(at, ctrl_c)])
    state = json.loads((checkpoint_dir / "state.json").read_text())
    assert len(state["rows"]) == at // BATCHES_PER_EPOCH

    model, rows = fit(checkpoint_dir)
    full_model, full_rows = uninterrupted
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for row, full in zip(rows, full_rows, strict=True):
        assert row["stage"] == full["stage"]
        np.testing.assert_allclose(row["loss"], full["loss"], rtol=1e-4)
        np.testing.assert_allclose(row["val_loss"], full["val_loss"], rtol=1e-4)
    for weight, full in zip(
        model.get_weights(), full_model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(weight, full, rtol=1e-4, atol=1e-5)
    assert model.trainable_groups == full_model.trainable_groups


@pytest.mark.parametrize(
    "at",
    [
        # Mid-epoch 2, inside the stage that trains on cached features.
        BATCHES_PER_EPOCH + 2,
        # Mid-epoch 3: the cached stage's pass over the data is replayed.
        2 * BATCHES_PER_EPOCH + 2,
    ],
)
def test_resume_through_a_feature_cached_stage(tmp_path, at):
    cached = dict(augment=False, feature_cache=True)
    full_model, full_rows = fit(tmp_path / "full", **cached)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", callbacks=[AtBatch(at, ctrl_c)], **cached)
    model, rows = fit(tmp_path / "b", **cached)
    for row, full in zip(rows, full_rows, strict=True):
        np.testing.assert_allclose(row["loss"], full["loss"], rtol=1e-4)
    for weight, full in zip(
        model.get_weights(), full_model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(weight, full, rtol=1e-4, atol=1e-5)


def test_resuming_a_finished_run_restores_its_final_weights(
    tmp_path, uninterrupted
):
    checkpoint_dir = tmp_path / "checkpoint"
    fit(checkpoint_dir)
    model, rows = fit(checkpoint_dir)
    full_model, full_rows = uninterrupted
    assert len(rows) == len(full_rows)
    for weight, full in zip(
        model.get_weights(), full_model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(weight, full, rtol=1e-4, atol=1e-5)


def test_checkpoint_from_another_model_is_refused(tmp_path):
    checkpoint_dir = tmp_path / "checkpoint"
    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint_dir, callbacks=[AtBatch(BATCHES_PER_EPOCH + 1, ctrl_c)])
    backbone, converter = kit.tiny_vit()
    other = TransferClassifier(
        backbone, num_classes=3, image_converter=converter
    )
    data = bundle()
    with pytest.raises(
        kerastl.train.checkpoints.CheckpointError,
        match="Resume with the recipe",
    ):
        kerastl.fine_tune(
            other,
            data.splits["train"],
            stages=STAGES,
            checkpoint_dir=checkpoint_dir,
            print_fn=lambda _: None,
            verbose=0,
        )


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_epoch(
    tmp_path,
):
    checkpoint_dir = tmp_path / "checkpoint"
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 3 .*'head'"):
        fit(
            checkpoint_dir, callbacks=[AtBatch(BATCHES_PER_EPOCH + 2, nan_head)]
        )
    state = json.loads((checkpoint_dir / "state.json").read_text())
    assert [r["epoch"] for r in state["rows"]] == [1]
    assert all(np.isfinite(r["loss"]) for r in state["rows"])
    saved = np.load(checkpoint_dir / state["arrays"])
    assert all(np.isfinite(saved[k]).all() for k in saved.files)


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    model = build()
    data = bundle(augment=False)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(
                (logs["val_loss"], [w.copy() for w in model.get_weights()])
            )

    # A rate this high makes the validation loss bounce around, so the
    # best epoch is rarely the last.
    stage = Stage(epochs=6, optimizer="sgd", learning_rate=3.0, name="hot")
    rows = kerastl.fine_tune(
        model,
        data.splits["train"],
        data.splits["validation"],
        [stage],
        callbacks=[Record()],
        early_stopping=2,
        print_fn=lambda _: None,
        verbose=0,
    )
    losses = [loss for loss, _ in seen]
    best = int(np.argmin(losses))
    # Stopped after two epochs without a new best, or ran all six.
    assert len(rows) == 6 or len(rows) - 1 - best == 2
    expected = seen[best][1]
    for weight, best_weight in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(weight, best_weight)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "resnet_tiny"
    kit.save_tiny_preset("resnet", path)
    return path


RESUME_RECIPE = """
from kerastl import Recipe, Stage
from kerastl.data import Augment, DataSpec
import kit

images, labels = kit.color_images(96, num_classes=3)
recipe = Recipe(
    name="resume",
    preset="PRESET",
    data=DataSpec(
        "arrays",
        arrays={"train": (images, labels), "test": (images[:24], labels[:24])},
    ),
    batch_size=8,
    augment=Augment(flip=True, random_resized_crop=True),
    stages=(
        Stage(name="head", epochs=2, learning_rate=1e-2),
        Stage(name="all", epochs=2, train="all", learning_rate=1e-3),
    ),
)
"""


def _kerastl(*args):
    env = {**os.environ, "KERAS_BACKEND": keras.config.backend()}
    script = os.path.join(os.path.dirname(sys.executable), "kerastl")
    return subprocess.Popen(
        [script, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkill_mid_epoch_then_cli_resume_gives_the_same_run(
    tmp_path, tiny_preset
):
    from click.testing import CliRunner

    from kerastl.cli import cli

    recipe = tmp_path / "resume.py"
    recipe.write_text(RESUME_RECIPE.replace("PRESET", str(tiny_preset)))
    runner = CliRunner()
    full = runner.invoke(
        cli, ["fit", str(recipe), "--output-dir", str(tmp_path / "a")]
    )
    assert full.exit_code == 0, full.output

    killed = _kerastl("fit", str(recipe), "--output-dir", str(tmp_path / "b"))
    state_file = tmp_path / "b" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 600
    while not state_file.exists() and time.monotonic() < deadline:
        assert killed.poll() is None, killed.communicate()[0]
        time.sleep(0.05)
    # Killed during the second epoch at the earliest, before the run ends.
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert not (tmp_path / "b" / "metrics.json").exists()

    # The recipe's arrays are not in recipe.json, and a run directory names
    # no code to run: the recipe file is given again.
    resumed = runner.invoke(
        cli, ["fit", str(recipe), "--resume", str(tmp_path / "b")]
    )
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming" in resumed.output
    # Finished: model.keras holds the weights, the checkpoint is gone.
    assert not (tmp_path / "b" / "checkpoint").exists()

    def metrics(run):
        return json.loads((tmp_path / run / "metrics.json").read_text())

    a, b = metrics("a")["splits"]["test"], metrics("b")["splits"]["test"]
    assert a["accuracy"] == pytest.approx(b["accuracy"])
    history_a = (tmp_path / "a" / "history.csv").read_text().splitlines()
    history_b = (tmp_path / "b" / "history.csv").read_text().splitlines()
    assert len(history_a) == len(history_b) == 5
    for line_a, line_b in zip(history_a[1:], history_b[1:], strict=True):
        values_a = [float(v) for v in line_a.split(",")[1:]]
        values_b = [float(v) for v in line_b.split(",")[1:]]
        np.testing.assert_allclose(values_a, values_b, rtol=1e-4)


def test_fit_refuses_to_overwrite_a_run_and_resume_needs_a_run(tmp_path):
    from click.testing import CliRunner

    from kerastl.cli import cli

    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "run.json").write_text('{"smoke": false}')
    recipe = tmp_path / "r.py"
    recipe.write_text(RESUME_RECIPE.replace("PRESET", "unused"))
    runner = CliRunner()
    result = runner.invoke(
        cli, ["fit", str(recipe), "--output-dir", str(tmp_path / "run")]
    )
    assert result.exit_code == 1
    assert "holds an interrupted run" in result.output
    assert f"--resume {tmp_path / 'run'}" in result.output
    result = runner.invoke(cli, ["fit", "--resume", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a kerastl run directory" in result.output
