"""The test matrix: `nox` runs every backend's tests and the lint."""

import hashlib
import os
import pathlib
import sys

import nox

nox.needs_version = ">=2024.4.15"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "tests", "parity"]

ROOT = pathlib.Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
BACKENDS = ["jax", "tensorflow", "torch"]
# The three backends need the same packages (keras-hub pulls TensorFlow
# in, and the transformers peer needs torch), so one environment serves
# them all instead of installing ~2 GB three times.
SHARED_ENV = ROOT / ".nox" / "kerastl-test-env"


def _shared_env(session):
    """Creates or refreshes the shared test environment; returns its bin."""
    bin_dir = SHARED_ENV / ("Scripts" if sys.platform == "win32" else "bin")
    stamp = SHARED_ENV / "installed-from.sha256"
    digest = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + CONSTRAINTS.read_bytes()
    ).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return bin_dir
    session.run(sys.executable, "-m", "venv", "--clear", str(SHARED_ENV))
    session.run(
        str(bin_dir / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "-c",
        str(CONSTRAINTS),
        "-e",
        f"{ROOT}[test]",
        external=True,
    )
    stamp.write_text(digest)
    return bin_dir


@nox.session(venv_backend="none")
@nox.parametrize("backend", [nox.param(b, id=b, tags=[b]) for b in BACKENDS])
def tests(session, backend):
    """Run the test suite on one Keras backend."""
    bin_dir = _shared_env(session)
    session.env["KERAS_BACKEND"] = backend
    # Two workers take a quarter off the matrix on CI's two cores: much of
    # a test is single-threaded Python (tracing, compiling, Click). Whole
    # files go to one worker, so module fixtures are built once.
    workers = min(4, os.cpu_count() or 1)
    if backend == "torch" and workers > 1:
        # PyTorch gives each worker a thread per core, so the workers fight
        # over the cores: one thread each took the PyTorch session from
        # 6:57 to 5:23 on 2 cores.
        session.env["OMP_NUM_THREADS"] = "1"
    session.run(
        str(bin_dir / "python"),
        "-m",
        "pytest",
        *(["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []),
        *(session.posargs or ["tests"]),
        external=True,
    )


@nox.session(venv_backend="none")
def parity(session):
    """Print a backend x check table: same weights, same answers everywhere.

    Same logits and saliency maps (Grad-CAM, attention rollout) for a
    ResNet and a ViT preset; Hugging Face ViT, DeiT and
    DINOv2 checkpoints against transformers; a smoke recipe's metrics.
    Fails if any check is outside its tolerance (tests/parity_check.py).
    """
    bin_dir = _shared_env(session)
    python = str(bin_dir / "python")
    script = str(ROOT / "tests" / "parity_check.py")
    work = pathlib.Path(session.create_tmp()) / "parity"
    session.env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    session.run(python, script, "prepare", str(work), external=True)
    for backend in BACKENDS:
        session.run(
            python,
            script,
            "check",
            str(work),
            env={"KERAS_BACKEND": backend},
            external=True,
        )
    session.run(python, script, "table", str(work), external=True)


@nox.session
def lint(session):
    """Check style and formatting with ruff."""
    session.install("-c", str(CONSTRAINTS), "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
