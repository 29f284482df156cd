import keras
import kit
import numpy as np
import pytest

from kerastl import TransferClassifier


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("precision") / "tiny_resnet"
    kit.save_tiny_preset("resnet", path)
    return path


def _float_dtypes(weights):
    return {w.dtype for w in weights if "float" in str(w.dtype)}


def _train_briefly(model):
    images = kit.random_images(8)
    labels = np.arange(8) % 3
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert np.isfinite(history.history["loss"][0])
    moved = [
        not np.array_equal(a, b) for a, b in zip(after, before, strict=True)
    ]
    assert all(moved), "every trainable weight should move in one step"


@pytest.mark.parametrize(
    "precision, weights_dtype",
    [("mixed_bfloat16", "float32"), ("bfloat16", "bfloat16")],
)
def test_bfloat16_backbone_with_a_float32_head(
    precision, weights_dtype, tiny_preset
):
    reference = TransferClassifier.from_preset(tiny_preset, num_classes=3)
    model = TransferClassifier.from_preset(
        tiny_preset, num_classes=3, dtype=precision
    )
    model.set_weights(reference.get_weights())

    assert model.backbone.compute_dtype == "bfloat16"
    assert _float_dtypes(model.backbone.weights) == {weights_dtype}
    for layer in (model.pooler, model.output_dense, model.temperature_scaling):
        assert layer.compute_dtype == "float32"
    assert _float_dtypes(model.output_dense.weights) == {"float32"}

    images = kit.random_images(6)
    probs = model.predict(images, verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    # The same network in float32: bfloat16 keeps ~3 significant digits.
    expected = reference.predict(images, verbose=0)
    np.testing.assert_allclose(probs, expected, atol=0.02)
    assert not np.array_equal(probs, expected)
    if weights_dtype == "bfloat16":
        # bfloat16 weights lose updates under ~0.4% of their size: a
        # fine-tuning rate of 1e-4 would leave the backbone where it was.
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    _train_briefly(model)


def test_mixed_float16_scales_the_loss(tiny_preset):
    model = TransferClassifier.from_preset(
        tiny_preset, num_classes=3, dtype="mixed_float16"
    )
    assert model.backbone.compute_dtype == "float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    _train_briefly(model)
    # A recompile after a trainable change keeps the scaling.
    model.freeze_backbone()
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_precision_survives_saving(tiny_preset, tmp_path):
    model = TransferClassifier.from_preset(
        tiny_preset, num_classes=3, dtype="mixed_bfloat16"
    )
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.backbone.dtype_policy.name == "mixed_bfloat16"
    images = kit.random_images(4)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0),
        model.predict(images, verbose=0),
        atol=1e-6,
    )
