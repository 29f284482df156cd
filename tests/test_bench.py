import json

import keras
import pytest
from click.testing import CliRunner

from kerastl.cli import cli

BACKEND = keras.config.backend()
# What Keras' "auto" resolves to on a CPU-only machine.
AUTO_COMPILE = {
    "jax": "jax.jit (XLA)",
    "tensorflow": "tf.function",
    "torch": "eager",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "bench.json"
    args = [
        "bench",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--cache-epochs",
        "1",
        "--output",
        str(output),
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(output.read_text()), result.output


def test_bench_times_kerastl_and_its_peers(results):
    data, output = results
    speeds = data["images_per_second"]
    expected = {"pipeline"} | {
        f"{who}_{kind}"
        for who in ("kerastl", "keras_hub")
        for kind in ("train_full", "train_frozen", "predict")
    }
    if BACKEND == "torch":
        expected |= {"torch_train_full", "torch_predict"}
    assert set(speeds) == expected
    assert all(value > 0 for value in speeds.values())
    for name, ratio in data["ratios"].items():
        kind, peer = name.split("_vs_")
        assert ratio == pytest.approx(
            speeds[f"kerastl_{kind}"] / speeds[f"{peer}_{kind}"], abs=1e-3
        )
    assert "| kerastl / keras_hub |" in output


def test_bench_describes_compile_and_machine(results):
    data, _ = results
    assert data["backend"] == BACKEND
    assert data["compile"] == AUTO_COMPILE[BACKEND]
    assert data["machine"]["cpu_count"] >= 1
    assert "cpu:0" in data["machine"]["devices"]
    assert data["settings"]["batch_size"] == 4


def test_bench_compares_the_feature_cache(results):
    cache = results[0]["feature_cache"]
    assert cache["epochs"] == 1
    assert cache["speedup"] == pytest.approx(
        cache["in_graph_seconds"] / cache["cached_cold_seconds"], rel=0.02
    )


def test_bench_rejects_an_unknown_model():
    result = CliRunner().invoke(cli, ["bench", "--model", "resnet_51"])
    assert result.exit_code != 0
    assert "resnet_51" in result.output
