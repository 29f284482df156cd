import json

import keras
import kit
import pytest
from click.testing import CliRunner

from kerastl import bench
from kerastl.bench import peers
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
    folder = tmp_path_factory.mktemp("bench")
    output = folder / "bench.json"
    kit.save_tiny_preset("resnet", folder / "tiny_resnet")
    args = [
        "bench",
        "--model",
        str(folder / "tiny_resnet"),
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


@pytest.mark.backends(
    "torch", reason="the native PyTorch peer runs on the PyTorch backend"
)
def test_pytorch_peer_trains_the_same_architecture():
    import transformers

    settings = bench.BenchSettings(
        image_size=32, batch_size=2, steps=1, warmup=1, repeats=1
    )
    data, _ = bench._synthetic_data(settings)
    tasks = peers.torch_native_tasks(settings, data.repeat())
    speeds = bench._interleaved_speeds(tasks, settings)
    assert set(speeds) == {"torch_train_full", "torch_predict"}
    assert all(value > 0 for value in speeds.values())
    # transformers' ResNet-18 and the built-in keras-hub one: both 11.2 M
    # parameters, within the small differences of their stems and heads.
    config = transformers.ResNetConfig(
        embedding_size=64,
        hidden_sizes=[64, 128, 256, 512],
        depths=[2, 2, 2, 2],
        layer_type="basic",
    )
    twin = transformers.ResNetModel(config)
    torch_params = sum(p.numel() for p in twin.parameters())
    backbone, _ = peers.built_in_backbone("resnet18", 32)
    assert torch_params == pytest.approx(backbone.count_params(), rel=0.01)
