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
        "--photos",
        "2",
        "--photo-size",
        "32",
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
    # The speedup is of the unrounded times, the seconds are rounded to
    # 0.01: on sub-second runs that alone moves the ratio by over 2%.
    slow, fast = cache["in_graph_seconds"], cache["cached_cold_seconds"]
    low = (slow - 0.005) / (fast + 0.005) - 0.005
    high = (slow + 0.005) / (fast - 0.005) + 0.005
    assert low <= cache["speedup"] <= high


def test_bench_times_the_photo_pipeline(results):
    data, output = results
    rows = data["photo_pipeline"]
    assert rows["photos"] == 2 and rows["photo_size"] == 32
    speeds = rows["images_per_second"]
    assert set(speeds) == {"full", "reduced", "cached"}
    cores = data["machine"]["cpu_count"]
    for way, speed in speeds.items():
        assert speed > 0
        assert rows["images_per_second_per_core"][way] == pytest.approx(
            speed / cores, abs=0.01
        )
    assert rows["speedup_cached_vs_full"] == pytest.approx(
        speeds["cached"] / speeds["full"], abs=0.1
    )
    # 12 MP JPEGs are written; their entries at 64 px a side are small.
    assert 0 < rows["cache_mb_per_1000_images"] < 50
    assert rows["cached_vs_reduced_mean_abs"] < 3.0
    assert "| per core |" in output


def test_bench_records_the_machine_load(results):
    load = results[0]["load"]
    assert len(load["load_average_before"]) == 3
    assert len(load["load_average_after"]) == 3
    assert load["cores"] == results[0]["machine"]["cpu_count"]
    assert 0.0 <= load["others_cpu_share"] <= 1.0


def test_the_load_warning_counts_other_processes_only(monkeypatch):
    # A hand-worked case: 10 s on 2 cores, the machine busy for 18 CPU
    # seconds of which the bench's own process took 10: others 8 / 20.
    clock = iter([100.0, 110.0])
    busy = iter([1000.0, 1018.0])
    own = iter([5.0, 15.0])
    monkeypatch.setattr(bench.load.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(bench.load, "_busy_seconds", lambda: next(busy))
    monkeypatch.setattr(bench.load, "_own_seconds", lambda: next(own))
    monkeypatch.setattr(bench.load.os, "cpu_count", lambda: 2)
    with bench.load.MachineLoad() as machine:
        pass
    assert machine.others_share() == pytest.approx(0.4)
    assert "other processes used 40% of the 2 cores" in machine.warning()


def test_bench_rejects_an_unknown_model():
    result = CliRunner().invoke(cli, ["bench", "--model", "resnet_51"])
    assert result.exit_code != 0
    assert "resnet_51" in result.output


@pytest.mark.backends(
    "torch", reason="the native PyTorch peer runs on the PyTorch backend"
)
@pytest.mark.parametrize("dtype_policy", ["float32", "mixed_bfloat16"])
def test_pytorch_peer_trains_the_same_architecture(dtype_policy):
    settings = bench.BenchSettings(
        image_size=32,
        batch_size=2,
        steps=1,
        warmup=1,
        repeats=1,
        dtype_policy=dtype_policy,
    )
    data, _ = bench._synthetic_data(settings)
    tasks = peers.torch_native_tasks(settings, data.repeat())
    speeds = bench._interleaved_speeds(tasks, settings)
    assert set(speeds) == {"torch_train_full", "torch_predict"}
    assert all(value > 0 for value in speeds.values())


@pytest.mark.backends(
    "torch", reason="the native PyTorch peer runs on the PyTorch backend"
)
@pytest.mark.parametrize("name", peers.BUILT_IN)
def test_built_in_models_have_the_size_of_their_pytorch_twins(name):
    import transformers

    # The twin's body (no classifier or pooler, the same 32 px input)
    # against the keras-hub backbone, within the small differences of
    # their stems and final norms.
    _, _, family, arguments = peers._ARCHITECTURES[name]
    model_class = getattr(transformers, f"{family}Model")
    if family == "ViT":
        config = transformers.ViTConfig(image_size=32, **arguments)
        twin = model_class(config, add_pooling_layer=False)
    else:
        twin = model_class(transformers.ResNetConfig(**arguments))
    torch_params = sum(p.numel() for p in twin.parameters())
    backbone, _ = peers.built_in_backbone(name, 32)
    assert torch_params == pytest.approx(backbone.count_params(), rel=0.01)
