"""Run directories nothing can break: unique, locked, never a user's folder,
resumed from data alone, with one-paragraph errors."""

import datetime
import errno
import hashlib
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
from click.testing import CliRunner
from PIL import Image

from kerastl import TransferClassifier
from kerastl.cli import cli
from kerastl.errors import RunDirError
from kerastl.runs import locking
from kerastl.runs import rundir
from kerastl.utils import atomic

RECIPE = """
from kerastl import Recipe, Stage
from kerastl.data import Augment, DataSpec

recipe = Recipe(
    name="shapes",
    preset={preset!r},
    data=DataSpec("folder", {folder!r}, validation_fraction=0.25),
    batch_size=4,
    augment=Augment(flip=False),
    stages=(
        Stage(name="head", epochs=2, learning_rate=1e-2),
        Stage(name="all", epochs=1, train="all", learning_rate=1e-3),
    ),
)
"""


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "resnet_tiny"
    kit.save_tiny_preset("resnet", path)
    return path


@pytest.fixture
def recipe(tmp_path, tiny_preset):
    folder = tmp_path / "images"
    for name, color in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 30), color).save(folder / name / f"{i}.png")
    path = tmp_path / "shapes.py"
    path.write_text(RECIPE.format(preset=str(tiny_preset), folder=str(folder)))
    return path


@pytest.fixture
def runner():
    return CliRunner()


def _kerastl(*args, cwd=None):
    env = {**os.environ, "KERAS_BACKEND": keras.config.backend()}
    script = os.path.join(os.path.dirname(sys.executable), "kerastl")
    return subprocess.Popen(
        [script, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _digest(folder):
    """Every file under `folder` and its bytes' sha256."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(
            path.read_bytes()
        ).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_runs_started_in_the_same_second_get_their_own_directories(
    tmp_path,
):
    now = datetime.datetime(2026, 12, 4, 6, 0, 0)
    locks = [rundir.new_run_dir(tmp_path / "runs", now=now) for _ in range(3)]
    assert [lock.run_dir.name for lock in locks] == [
        "20261204-060000",
        "20261204-060000-2",
        "20261204-060000-3",
    ]
    for lock in locks:
        lock.release()
    assert not any((tmp_path / "runs").rglob(locking.LOCK_FILE))


HOLD = """
import sys, time
from kerastl.runs import rundir
lock = rundir.claim(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_a_held_run_dir_is_refused_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"process {holder.pid} on"):
            rundir.claim(run_dir)
        with pytest.raises(RunDirError, match=f"process {holder.pid} on"):
            rundir.check_output_dir(run_dir, resume=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    # The kernel dropped the dead process's lock: nothing is stale.
    rundir.claim(run_dir).release()


@pytest.mark.backends(
    "torch",
    reason="the run directory's lock is the operating system's, the same "
    "on every backend",
)
def test_two_fits_into_one_output_dir_only_one_runs(recipe, tmp_path):
    run_dir = tmp_path / "run"
    fits = [
        _kerastl("fit", str(recipe), "--output-dir", str(run_dir))
        for _ in range(2)
    ]
    outputs = [fit.communicate(timeout=900)[0] for fit in fits]
    codes = sorted(fit.returncode for fit in fits)
    assert codes == [0, 1], outputs
    refused = outputs[[fit.returncode for fit in fits].index(1)]
    assert "Traceback" not in refused
    assert (
        "in use by another kerastl process" in refused
        or "holds a finished run" in refused
    ), refused
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["splits"]["validation"]["num_examples"] == 2
    assert not (run_dir / locking.LOCK_FILE).exists()


def test_output_dir_with_user_files_is_refused_untouched(
    runner, recipe, tmp_path
):
    mine = tmp_path / "mine"
    (mine / "preset").mkdir(parents=True)
    (mine / "preset" / "notes.txt").write_text("my own work")
    (mine / "report.md").write_text("# my report")
    before = _digest(mine)
    result = runner.invoke(cli, ["fit", str(recipe), "--output-dir", str(mine)])
    assert result.exit_code == 1
    assert "did not write (preset, report.md)" in result.output
    assert _digest(mine) == before
    # Inside the training data: refused too, and nothing written there.
    data = tmp_path / "images"
    before = _digest(data)
    result = runner.invoke(
        cli, ["fit", str(recipe), "--output-dir", str(data / "run")]
    )
    assert result.exit_code == 1
    assert "lies inside the data" in result.output
    assert _digest(data) == before


def test_evaluate_never_replaces_a_runs_results(runner, recipe, tmp_path):
    run_dir = tmp_path / "run"
    result = runner.invoke(
        cli, ["fit", str(recipe), "--output-dir", str(run_dir)]
    )
    assert result.exit_code == 0, result.output
    before = _digest(run_dir)
    result = runner.invoke(
        cli,
        [
            "evaluate",
            str(run_dir),
            "--data",
            str(tmp_path / "images"),
            "--output-dir",
            str(run_dir),
        ],
    )
    assert result.exit_code == 1
    assert "would replace the run's own metrics.json" in result.output
    assert _digest(run_dir) == before
    # The default place, and evaluating there again, are fine.
    for _ in range(2):
        result = runner.invoke(
            cli, ["evaluate", str(run_dir), "--data", str(tmp_path / "images")]
        )
        assert result.exit_code == 0, result.output
    assert (run_dir / "evaluations" / "images" / "metrics.json").exists()


def _interrupted_run(runner, recipe, run_dir, monkeypatch):
    """A run stopped by Ctrl-C after its first epoch's checkpoint."""
    from kerastl.train import checkpoints

    save = checkpoints.Checkpoint.save

    def save_then_interrupt(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.Checkpoint, "save", save_then_interrupt)
        result = runner.invoke(
            cli, ["fit", str(recipe), "--output-dir", str(run_dir)]
        )
    assert "Interrupted" in result.output, result.output
    assert (run_dir / "checkpoint" / "state.json").exists()


def test_failed_resume_changes_nothing(runner, recipe, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    _interrupted_run(runner, recipe, run_dir, monkeypatch)
    before = _digest(run_dir)
    # The checkpoint holds a head-only stage's optimizer; `all` trains more
    # variables, so it cannot take that state.
    result = runner.invoke(
        cli, ["fit", "--resume", str(run_dir), "--set", "stages.1.train=all"]
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert _digest(run_dir) == before
    result = runner.invoke(cli, ["fit", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "Resuming" in result.output


def test_resume_warns_when_the_data_changed(
    runner, recipe, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    _interrupted_run(runner, recipe, run_dir, monkeypatch)
    images = tmp_path / "images"
    Image.new("RGB", (40, 30), (0, 0, 250)).save(images / "blue" / "new.png")
    (images / "red" / "0.png").unlink()
    result = runner.invoke(cli, ["fit", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "Warning: 2 data file(s) were added, removed or changed" in (
        result.output
    )


ARRAYS_RECIPE = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from kerastl import Recipe
from kerastl.data import DataSpec
recipe = Recipe(name="a", preset="p", data=DataSpec("arrays"))
"""


def test_resume_runs_no_code_named_by_a_run_dir(runner, tmp_path):
    marker = tmp_path / "marker"
    script = tmp_path / "evil.py"
    script.write_text(ARRAYS_RECIPE.format(marker=str(marker)))
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "run.json").write_text(
        json.dumps({"smoke": False, "file": str(script), "overrides": []})
    )
    recipe = {
        "name": "a",
        "preset": "p",
        "data": {"source": "arrays", "arrays": "<dict>"},
        "augment": {},
        "stages": [{}],
    }
    (run_dir / "recipe.json").write_text(json.dumps(recipe))
    result = runner.invoke(cli, ["fit", "--resume", str(run_dir)])
    assert result.exit_code == 2
    assert "kerastl fit RECIPE --resume" in result.output
    assert not marker.exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("image_size=abc", "two whole numbers of at least 8"),
        ("image_size=1,1", "two whole numbers of at least 8"),
        ("image_size=-4,-4", "two whole numbers of at least 8"),
        ("stages.1.learning_rate=0", "learning_rate must be a positive"),
        ("stages.head.learning_rate=-1e-3", "learning_rate must be a positive"),
        ("name=../../etc", "plain folder name"),
    ],
)
def test_bad_values_are_one_paragraph(
    runner, recipe, tmp_path, override, message
):
    result = runner.invoke(
        cli,
        ["fit", str(recipe), "--output-dir", str(tmp_path / "r")]
        + ["--set", override],
    )
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_disk_full_is_one_paragraph(runner, recipe, tmp_path, monkeypatch):
    write_text = atomic.write_text

    def full(path, text):
        if str(path).endswith("history.csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_text(path, text)

    monkeypatch.setattr(atomic, "write_text", full)
    result = runner.invoke(
        cli, ["fit", str(recipe), "--output-dir", str(tmp_path / "run")]
    )
    assert result.exit_code == 1
    assert "No space left on device" in result.output
    assert "Free some disk space" in result.output
    assert "Traceback" not in result.output


def test_predict_top_k_must_be_positive(runner, tmp_path):
    result = runner.invoke(
        cli, ["predict", str(tmp_path), str(tmp_path), "--top-k", "0"]
    )
    assert result.exit_code == 2
    assert "--top-k" in result.output


@pytest.mark.parametrize("kind", ["zip", "truncated"])
def test_a_broken_keras_file_is_one_paragraph(runner, tmp_path, kind):
    import zipfile

    path = tmp_path / "model.keras"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("hello.txt", "not a model")
    else:
        backbone, converter = kit.tiny_resnet()
        from kerastl import TransferClassifier

        TransferClassifier(
            backbone, num_classes=2, image_converter=converter
        ).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    started = time.monotonic()
    result = runner.invoke(cli, ["predict", str(path), str(image)])
    assert result.exit_code == 1, result.output
    assert "is not a readable .keras model" in result.output
    assert "Traceback" not in result.output
    assert time.monotonic() - started < 60


def saved_classifier(path, seed):
    keras.utils.set_random_seed(seed)
    backbone, converter = kit.tiny_resnet(16)
    model = TransferClassifier(
        backbone, 3, image_converter=converter, class_names=["a", "b", "c"]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def test_one_loader_for_runs_files_and_presets(tmp_path):
    images = kit.random_images(4, image_size=16)
    older_file = tmp_path / "runs" / "1" / rundir.MODEL_FILE
    older = saved_classifier(older_file, 1)
    # Written long ago: the folder's newest run is the other one.
    os.utime(older_file, (1, 1))
    newer = saved_classifier(tmp_path / "runs" / "2" / rundir.MODEL_FILE, 2)
    newer.save_to_preset(tmp_path / "preset")
    expected = {
        "run directory": (tmp_path / "runs" / "1", older),
        "folder of runs (newest)": (tmp_path / "runs", newer),
        ".keras file": (older_file, older),
        "preset": (tmp_path / "preset", newer),
    }
    for what, (path, model) in expected.items():
        loaded = rundir.load_classifier(path)
        np.testing.assert_allclose(
            loaded.predict(images, verbose=0),
            model.predict(images, verbose=0),
            atol=1e-6,
            err_msg=what,
        )
    assert rundir.newest_run(tmp_path / "runs") == tmp_path / "runs" / "2"
    assert rundir.newest_run(tmp_path / "preset") is None


def test_the_loader_says_what_a_model_can_be(tmp_path):
    with pytest.raises(ValueError, match="does not exist. A teacher is"):
        rundir.load_classifier(tmp_path / "runs" / "missing", role="teacher")
    with pytest.raises(ValueError, match="Model 'vit_base.*' does not exist"):
        rundir.load_classifier("vit_base_patch16_224_imagenet")
    # A keras-hub preset has a backbone but no head for the user's classes.
    kit.save_tiny_preset("vit", tmp_path / "vit")
    with pytest.raises(ValueError, match="is not a trained classifier"):
        rundir.load_classifier(tmp_path / "vit", role="teacher")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not a trained classifier"):
        rundir.load_classifier(tmp_path / "notes.txt")
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a readable .keras model"):
        rundir.load_classifier(tmp_path / "broken.keras")
