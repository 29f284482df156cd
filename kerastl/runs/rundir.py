"""The run directory: its layout, who may write into it, and its lock.

A run directory is the record of one `kerastl fit`. kerastl writes only
into directories it created itself, or that were empty when it started (a
user's `--output-dir`); one process at a time holds a run directory, through
an exclusive lock on its `.kerastl.lock` file that the operating system releases
when the process ends, however it ends.

Layout (file names other modules use come from here):
`model.keras`, `preset/`, `recipe.json`, `run.json`, `history.csv`,
`metrics.json`, `report.md`, `plots/`, `skipped_files.txt`, and
`checkpoint/` until the run has finished.
"""

import datetime
import fcntl
import json
import os
import pathlib
import zipfile

from kerastl.errors import RunDirError
from kerastl.runs import locking
from kerastl.utils import atomic

MODEL_FILE = "model.keras"
PRESET_DIR = "preset"
RECIPE_FILE = "recipe.json"
RUN_FILE = "run.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
SKIPPED_FILE = "skipped_files.txt"
CHECKPOINT_DIR = "checkpoint"
EXPORT_DIR = "export"
# The data files a run started with, kept in CHECKPOINT_DIR for --resume.
MANIFEST_FILE = "data_manifest.json"

# The most same-second runs of one recipe that get a numbered suffix.
_MAX_SUFFIX = 1000


def is_run(path):
    """Whether `path` is a directory `kerastl fit` wrote (it has run.json).

    Example:
    ```python
    kerastl.runs.rundir.is_run("runs/pets/20261123-140512")  # True
    ```
    """
    return (pathlib.Path(path) / RUN_FILE).is_file()


def is_finished(path):
    """Whether the run in `path` has finished (it has metrics.json).

    Example:
    ```python
    kerastl.runs.rundir.is_finished("runs/pets/20261123-140512")
    ```
    """
    return is_run(path) and (pathlib.Path(path) / METRICS_FILE).is_file()


def default_parent(name):
    """`runs/<name>`, relative to the working directory, where `fit` puts a
    recipe's runs.

    Example:
    ```python
    kerastl.runs.rundir.default_parent("pets")  # PosixPath('runs/pets')
    ```
    """
    return pathlib.Path("runs") / name


def new_run_dir(parent, now=None):
    """Creates and locks a new run directory `parent/<timestamp>`.

    Two runs started in the same second get `<timestamp>`, `<timestamp>-2`,
    ...: the directory is created with `mkdir` without `exist_ok`, which
    only one process can win.

    Args:
        parent: path, e.g. `runs/pets`.
        now: `datetime.datetime` or `None` (the current time).

    Returns:
        A held `RunLock`; its `run_dir` is the new directory.

    Example:
    ```python
    lock = kerastl.runs.rundir.new_run_dir("runs/pets")
    lock.run_dir  # runs/pets/20261123-140512
    ```
    """
    parent = pathlib.Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    for suffix in range(1, _MAX_SUFFIX + 1):
        run_dir = parent / (stamp if suffix == 1 else f"{stamp}-{suffix}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return locking.RunLock(run_dir).acquire()
    raise RunDirError(
        f"{parent} already holds {_MAX_SUFFIX} runs started at {stamp}. "
        "Choose an --output-dir."
    )


def check_output_dir(run_dir, resume=False):
    """Refuses a directory that `fit` must not write into; writes nothing.

    Without `resume`: the directory must not exist, or be empty. A
    finished run, an interrupted run (use `--resume`) and a folder of
    anything else (a user's files) are refused. With `resume`, it must be
    an unfinished kerastl run.

    Args:
        run_dir: path.
        resume: bool.

    Example:
    ```python
    kerastl.runs.rundir.check_output_dir("runs/pets/mine")
    ```
    """
    run_dir = pathlib.Path(run_dir)
    _check_not_held(run_dir)
    _check_contents(run_dir, resume)


def _check_not_held(run_dir):
    """Raises if another process holds `run_dir`'s lock; writes nothing."""
    try:
        fd = os.open(pathlib.Path(run_dir) / locking.LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        raise locking.in_use(run_dir, os.read(fd, 4096)) from None
    finally:
        os.close(fd)


def _check_contents(run_dir, resume):
    if resume:
        if not is_run(run_dir):
            raise RunDirError(
                f"{run_dir} is not a kerastl run directory (it has no "
                f"{RUN_FILE}); --resume takes the directory an interrupted "
                "`kerastl fit` wrote."
            )
        if is_finished(run_dir):
            raise RunDirError(
                f"The run in {run_dir} has finished; there is nothing to "
                "resume. Start a new run with `kerastl fit RECIPE`."
            )
        return
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirError(
            f"--output-dir {run_dir} is a file. Give the path of a new or "
            "empty directory."
        )
    if is_finished(run_dir):
        raise RunDirError(
            f"{run_dir} holds a finished run. Choose another --output-dir "
            "(or leave it out for a new runs/<name>/<timestamp>)."
        )
    if is_run(run_dir):
        raise RunDirError(
            f"{run_dir} holds an interrupted run. Continue it with `kerastl "
            f"fit --resume {run_dir}`, or choose another --output-dir."
        )
    contents = [
        p.name for p in run_dir.iterdir() if p.name != locking.LOCK_FILE
    ]
    if contents:
        shown = ", ".join(sorted(contents)[:5])
        raise RunDirError(
            f"--output-dir {run_dir} already holds files that kerastl did "
            f"not write ({shown}{', ...' if len(contents) > 5 else ''}). A "
            "run never writes into a folder of other files: give a new or "
            "empty directory."
        )


def claim(run_dir, resume=False):
    """Creates (if needed) and locks `run_dir` for a run; checks it again
    under the lock, so two processes cannot both pass the check.

    Args:
        run_dir: path: a user's `--output-dir`, or a run to resume.
        resume: bool. Whether the run in it is continued.

    Returns:
        A held `RunLock`.

    Example:
    ```python
    with kerastl.runs.rundir.claim("runs/pets/mine") as lock:
        ...
    ```
    """
    run_dir = pathlib.Path(run_dir)
    check_output_dir(run_dir, resume=resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = locking.RunLock(run_dir).acquire()
    try:
        # Again under the lock: another process may have started a run
        # here since the first check.
        _check_contents(run_dir, resume)
    except RunDirError:
        lock.release(remove=False)
        raise
    return lock


def check_outside(run_dir, folder, what):
    """Refuses a run or output directory inside `folder` (user data, which
    kerastl only reads).

    Args:
        run_dir: path of the directory to be written.
        folder: path or `None`. Nothing is checked for `None`.
        what: str naming `folder` in the message, e.g. "the training data".

    Example:
    ```python
    kerastl.runs.rundir.check_outside("data/flowers/run", "data/flowers",
                                 "the training data")  # RunDirError
    ```
    """
    if folder is None:
        return
    inner = pathlib.Path(run_dir).resolve()
    outer = pathlib.Path(folder).resolve()
    if inner == outer or outer in inner.parents:
        raise RunDirError(
            f"{run_dir} lies inside {what} ({folder}), which kerastl only "
            "reads: its files would be mixed with the data. Choose a "
            "directory outside it."
        )


def check_evaluation_dir(output_dir, own_run=None):
    """Refuses an evaluation output directory that would replace a run's
    training results or hold a user's files; writes nothing.

    Allowed: a new or empty directory, an earlier evaluation's output, and
    `own_run` itself (evaluating a run's own split adds to its results).

    Args:
        output_dir: path.
        own_run: path of the run being evaluated on its own data, or `None`.

    Example:
    ```python
    kerastl.runs.rundir.check_evaluation_dir("runs/pets/x/evaluations/new")
    ```
    """
    output_dir = pathlib.Path(output_dir)
    if not output_dir.exists():
        return
    if own_run is not None and output_dir.resolve() == (
        pathlib.Path(own_run).resolve()
    ):
        return
    if is_run(output_dir):
        raise RunDirError(
            f"{output_dir} is a run directory: this evaluation would "
            "replace the run's own metrics.json and report.md. Leave "
            "--output-dir out (results go to <run>/evaluations/<data name>) "
            "or choose a new directory."
        )
    metrics = output_dir / METRICS_FILE
    earlier = metrics.is_file() and "data" in _read_json(metrics)
    if not earlier and any(output_dir.iterdir()):
        raise RunDirError(
            f"--output-dir {output_dir} already holds files that kerastl "
            "did not write. Give a new or empty directory."
        )


def _read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return {}


def evaluation_report_file(split):
    """The report `kerastl evaluate RUN --split SPLIT` writes into a run.

    Example:
    ```python
    kerastl.runs.rundir.evaluation_report_file("test")  # 'evaluation_test.md'
    ```
    """
    return f"evaluation_{split}.md"


CLASSIFIER_KINDS = (
    "a run directory of `kerastl fit` (or a folder of such runs, whose "
    "newest is used), a `.keras` file, or a preset written by "
    "`save_to_preset`"
)


def newest_run(folder):
    """The run directory under `folder` whose model was written last.

    `kerastl fit` writes one run directory per run under `runs/<recipe>/`;
    this is the latest finished one, or `None` when there is none.

    Example:
    ```python
    kerastl.runs.rundir.newest_run("runs/cifar10_vit")
    # PosixPath('runs/cifar10_vit/20261123-140512')
    ```
    """
    models = sorted(
        pathlib.Path(folder).glob(f"*/{MODEL_FILE}"),
        key=lambda path: (path.stat().st_mtime, path),
    )
    return models[-1].parent if models else None


def model_source(path, role="model"):
    """What `load_classifier` loads for `path`: a `.keras` file or a preset.

    A `.keras` file is itself; a run directory gives its `model.keras`; a
    folder of run directories gives the newest run's; any other directory
    or a `kaggle://`/`hf://` handle is a preset.

    Args:
        path: str or path-like.
        role: str. What the model is for, in error messages (`"model"`,
            `"teacher"`).

    Returns:
        A str.

    Example:
    ```python
    kerastl.runs.rundir.model_source("runs/cifar10_vit")
    # 'runs/cifar10_vit/20261123-140512/model.keras'
    ```
    """
    text = str(path)
    path = pathlib.Path(text)
    if "://" in text or path.is_file() and path.suffix == ".keras":
        return text
    if (path / MODEL_FILE).is_file():
        return str(path / MODEL_FILE)
    newest = newest_run(path) if path.is_dir() else None
    if newest is not None:
        return str(newest / MODEL_FILE)
    if path.is_dir():
        return text
    if path.exists():
        raise _not_a_classifier(text, role)
    raise ValueError(
        f"{role.capitalize()} '{text}' does not exist. A {role} is "
        f"{CLASSIFIER_KINDS}; keras-hub's built-in presets have no head for "
        "your classes. Train one first (for example `kerastl fit "
        f"recipes/pets.py`) and pass its run directory. Received: "
        f"{role}={text!r}"
    )


def load_classifier(path, role="model"):
    """Loads a trained classifier from a run, a `.keras` file or a preset.

    The one loader of `kerastl evaluate`, `predict`, `export` and of a
    recipe's distillation teacher (see `model_source` for what `path` may
    be). A damaged `.keras` file is a one-paragraph `ValueError`.

    Args:
        path: str or path-like.
        role: str. What the model is for, in error messages.

    Returns:
        The model: a `TransferClassifier` for kerastl runs and presets.

    Example:
    ```python
    model = kerastl.runs.rundir.load_classifier("runs/pets")
    ```
    """
    # Keras and the model code load with the first model, so the layout,
    # the lock and reading a run's files (`kerastl compare`) stay light.
    from kerastl.models import presets
    from kerastl.models.classifier import TransferClassifier

    source = model_source(path, role)
    if source.endswith(".keras"):
        return _load_keras_file(source)
    if not presets.load_head_config(source):
        raise _not_a_classifier(source, role)
    return TransferClassifier.from_preset(source)


def _not_a_classifier(text, role):
    return ValueError(
        f"{role.capitalize()} '{text}' is not a trained classifier. A {role} "
        f"is {CLASSIFIER_KINDS}; keras-hub's built-in presets have no head "
        f"for your classes. Received: {role}={text!r}"
    )


def _load_keras_file(path):
    import keras

    try:
        # With `compile=False` a TransferClassifier, which compiles itself,
        # is left with an optimizer that cannot take the saved state.
        return keras.models.load_model(path)
    except (ValueError, TypeError) as error:
        if "Could not locate" not in str(error) and "Unknown" not in str(error):
            raise ValueError(_unreadable(path, error)) from error
        raise
    except (KeyError, OSError, EOFError, zipfile.BadZipFile) as error:
        # Keras reads a .keras file as a zip of config and weights: a
        # truncated or foreign file fails anywhere inside that.
        raise ValueError(_unreadable(path, error)) from error


def _unreadable(path, error):
    return (
        f"{path} is not a readable .keras model ({type(error).__name__}: "
        f"{error}). It may be truncated (an interrupted copy) or another "
        "kind of file. kerastl writes model.keras atomically, so a run "
        "directory's own copy is whole: copy it again, or evaluate the run "
        "directory itself."
    )


def write_skipped(skipped, run_dir, print_fn=print):
    """Lists the files a run skipped in `skipped_files.txt`, and says so.

    Args:
        skipped: list of `kerastl.data.SkippedFile`; nothing is written
            when it is empty.
        run_dir: the run (or evaluation) directory.
        print_fn: callable for console output.

    Example:
    ```python
    kerastl.runs.rundir.write_skipped(bundle.skipped, run_dir)
    ```
    """
    if not skipped:
        return
    lines = [f"{item.path}\t{item.reason}" for item in skipped]
    atomic.write_text(run_dir / SKIPPED_FILE, "\n".join(lines) + "\n")
    shown = "\n".join(f"  {line}" for line in lines[:10])
    more = f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else ""
    print_fn(
        f"Skipped {len(skipped)} unreadable file(s), listed in "
        f"{run_dir / SKIPPED_FILE}:\n{shown}{more}"
    )


def read_recipe(run_dir):
    """The recipe a run was started with, as the dict in its recipe.json.

    A run directory is data: no code in it, or named by it, is run.

    Example:
    ```python
    kerastl.runs.rundir.read_recipe("runs/pets/20261123-140512")["preset"]
    ```
    """
    return json.loads((pathlib.Path(run_dir) / RECIPE_FILE).read_text())


def read_metrics(run_dir):
    """A finished run's metrics.json, as a dict.

    Example:
    ```python
    kerastl.runs.rundir.read_metrics(run_dir)["splits"]["test"]["accuracy"]
    ```
    """
    return json.loads((pathlib.Path(run_dir) / METRICS_FILE).read_text())


def export_path(model_path, export_format):
    """Where `kerastl export` writes an artifact when no `--output` is given.

    A run directory exports into its own `export/` folder; a `.keras` file or
    a preset directory into a folder beside it named after it (`m.keras` ->
    `m_export/`, `presets/pets/` -> `presets/pets_export/`), so a preset
    directory stays a clean preset. Inside, the artifact is named by
    `kerastl.deploy.export.artifact_name`.

    Args:
        model_path: str or path-like. What `kerastl export` was given.
        export_format: `"saved_model"`, `"onnx"` or `"litert"`.

    Returns:
        A `pathlib.Path`.

    Example:
    ```python
    kerastl.runs.rundir.export_path("runs/pets/20261123-140512", "onnx")
    # PosixPath('runs/pets/20261123-140512/export/model.onnx')
    ```
    """
    model_path = pathlib.Path(model_path)
    if model_path.is_dir() and (model_path / MODEL_FILE).is_file():
        folder = model_path / EXPORT_DIR
    elif model_path.is_dir():
        folder = model_path.parent / f"{model_path.name}_{EXPORT_DIR}"
    else:
        folder = model_path.parent / f"{model_path.stem}_{EXPORT_DIR}"
    from kerastl.deploy import export

    return folder / export.artifact_name(export_format)
