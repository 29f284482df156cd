"""benchmarks/gpu.sh: what can be checked without a GPU."""

import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from kerastl.cli import cli

# A shell script and a JSON collector: nothing in them depends on Keras'
# backend.
pytestmark = pytest.mark.backends("torch", reason="no backend involved")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _run(env=None):
    return subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)


def test_without_a_gpu_it_refuses_and_says_why(tmp_path):
    # A PATH with bash and the basic tools but no nvidia-smi.
    result = _run({"PATH": "/usr/bin:/bin"})
    assert not (pathlib.Path("/usr/bin/nvidia-smi").exists())
    assert result.returncode == 2
    assert "nvidia-smi finds none" in result.stderr
    assert not (ROOT / "gpu-bench").exists()


def test_the_plan_covers_every_backend_model_and_precision():
    result = _run({"KERASTL_GPU_DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr
    steps = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    benches = {name for name in steps if name.startswith("bench-")}
    assert benches == {
        f"bench-{backend}-{model}-{policy}"
        for backend in ("jax", "tensorflow", "torch")
        for model in ("resnet50", "vit_base")
        for policy in ("float32", "mixed_bfloat16")
    }
    assert {name for name in steps if name.startswith("fit-")} == {
        "fit-jax",
        "fit-tensorflow",
        "fit-torch",
    }
    photo_runs = 0
    for name in benches:
        words = shlex.split(steps[name])
        assert words[:2] == ["env", f"KERAS_BACKEND={name.split('-')[1]}"]
        assert words[2:4] == ["kerastl", "bench"]
        # Every option is one `kerastl bench` accepts, with a valid value.
        context = cli.commands["bench"].make_context("bench", words[4:])
        assert context.params["image_size"] == 224
        photo_runs += context.params["photos"] > 0
    assert photo_runs == 1
    fit = shlex.split(steps["fit-torch"])
    cli.commands["fit"].make_context("fit", fit[4:])


def test_the_collector_writes_one_document(tmp_path):
    (tmp_path / "steps.txt").write_text(
        "bench-jax-resnet50-float32 0 61\nfit-jax 1 30\n"
    )
    (tmp_path / "fit-jax.log").write_text("line\n" * 50 + "Error: boom\n")
    bench = {"images_per_second": {"kerastl_train_full": 1234.5}}
    (tmp_path / "bench-jax-resnet50-float32.json").write_text(json.dumps(bench))
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_collect.py"), tmp_path],
        check=True,
        timeout=60,
    )
    document = json.loads((tmp_path / "gpu-bench.json").read_text())
    assert document["bench"]["bench-jax-resnet50-float32"] == bench
    assert document["steps"]["fit-jax"]["status"] == 1
    assert document["steps"]["fit-jax"]["seconds"] == 30
    assert document["steps"]["fit-jax"]["log_tail"][-1] == "Error: boom"
    assert len(document["steps"]["fit-jax"]["log_tail"]) == 40
    assert document["nvidia_smi"] is None
