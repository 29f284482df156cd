import keras
import kit
import numpy as np
import pytest

from kerastl import TransferClassifier

HEADS = [
    pytest.param(False, id="softmax"),
    pytest.param(True, id="sigmoid"),
]
FAMILIES = [pytest.param("resnet", id="resnet"), pytest.param("vit", id="vit")]


def build(family="resnet", **kwargs):
    backbone, converter = kit.TINY_BACKBONES[family]()
    kwargs.setdefault("num_classes", 3)
    return TransferClassifier(backbone, image_converter=converter, **kwargs)


class TestTransferClassifier(kit.ClassifierTestCase):
    @pytest.mark.parametrize("multi_label", HEADS)
    @pytest.mark.parametrize("family", FAMILIES)
    def test_classifier_basics(self, family, multi_label, tmp_path):
        backbone, converter = kit.TINY_BACKBONES[family]()
        self.run_classifier_test(
            dict(
                backbone=backbone,
                image_converter=converter,
                num_classes=4,
                multi_label=multi_label,
            ),
            tmp_path,
        )

    def test_logits_head(self, tmp_path):
        backbone, converter = kit.tiny_vit()
        model = self.run_classifier_test(
            dict(
                backbone=backbone,
                image_converter=converter,
                num_classes=3,
                activation=None,
            ),
            tmp_path,
        )
        logits = model.predict(kit.random_images(4), verbose=0)
        assert np.any((logits < 0) | (logits > 1))


@pytest.mark.parametrize("multi_label", HEADS)
def test_auto_loss_and_metrics_match_head(multi_label):
    model = build(multi_label=multi_label)
    expected = (
        keras.losses.BinaryCrossentropy
        if multi_label
        else keras.losses.SparseCategoricalCrossentropy
    )
    assert isinstance(model.loss, expected)
    assert model.loss.get_config()["from_logits"] is False
    assert build(multi_label=multi_label, activation=None).loss.get_config()[
        "from_logits"
    ]


@pytest.mark.parametrize(
    "multi_label, loss",
    [
        (False, "binary_crossentropy"),
        (False, keras.losses.BinaryCrossentropy()),
        (True, "sparse_categorical_crossentropy"),
        (True, keras.losses.CategoricalCrossentropy()),
    ],
    ids=["softmax-bce", "softmax-bce-obj", "sigmoid-sce", "sigmoid-cce-obj"],
)
def test_mismatched_loss_is_an_error(multi_label, loss):
    model = build(multi_label=multi_label)
    with pytest.raises(ValueError, match="does not fit this model"):
        model.compile(loss=loss)


def test_from_logits_mismatch_is_an_error():
    model = build()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match="from_logits=True"):
        model.compile(loss=loss)
    logits_model = build(activation=None)
    with pytest.raises(ValueError, match="outputs logits"):
        logits_model.compile(loss="sparse_categorical_crossentropy")


def test_bad_head_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        build(num_classes=1)
    with pytest.raises(ValueError, match="activation"):
        build(multi_label=True, activation="softmax")
    with pytest.raises(ValueError, match="class_names"):
        build(class_names=["a", "b"])
    with pytest.raises(ValueError, match="pooling"):
        build(pooling="cls")


def test_preprocessing_is_part_of_the_model():
    """uint8 and float pixels in [0, 255] give the features the backbone gives
    on images normalized by hand with the preset's ImageNet mean and std."""
    model = build("resnet")
    images = kit.random_images(3)
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    normalized = ((images / 255.0 - mean) / std).astype("float32")
    backbone_out = keras.ops.convert_to_numpy(model.backbone(normalized))
    expected = backbone_out.mean(axis=(1, 2))
    features = model.feature_extractor()
    np.testing.assert_allclose(
        features.predict(images, verbose=0), expected, atol=1e-4
    )
    np.testing.assert_allclose(
        features.predict(images.astype("float32"), verbose=0),
        expected,
        atol=1e-4,
    )
    assert model.image_size == (32, 32)


@pytest.mark.parametrize(
    "family, pooling",
    [
        ("resnet", "avg"),
        ("resnet", "max"),
        ("vit", "token"),
        ("vit", "mean_tokens"),
    ],
)
def test_pooling_modes(family, pooling):
    model = build(family, pooling=pooling)
    images = kit.random_images(2)
    converted = model.image_converter(images)
    out = keras.ops.convert_to_numpy(model.backbone(converted))
    expected = {
        "avg": lambda x: x.mean(axis=(1, 2)),
        "max": lambda x: x.max(axis=(1, 2)),
        "token": lambda x: x[:, 0],
        # The tiny ViT has one class token before its 16 patches.
        "mean_tokens": lambda x: x[:, 1:].mean(axis=1),
    }[pooling](out)
    np.testing.assert_allclose(
        model.feature_extractor().predict(images, verbose=0),
        expected,
        atol=1e-5,
    )


def test_token_pooling_needs_tokens():
    with pytest.raises(ValueError, match="needs a token sequence"):
        build("resnet", pooling="token")


def test_hidden_layer_and_dropout_in_head():
    model = build(hidden_dim=8, dropout=0.5)
    assert [layer.name for layer in model.head_layers] == [
        "pooler",
        "head_dropout",
        "head_hidden",
        "predictions",
        "temperature_scaling",
    ]
    assert model.get_layer("head_hidden").units == 8
    assert model.get_layer("head_dropout").rate == 0.5


def test_head_is_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build("vit")
        assert model.backbone.compute_dtype == "bfloat16"
        assert model.get_layer("predictions").compute_dtype == "float32"
        probs = model.predict(kit.random_images(2), verbose=0)
        assert probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("multi_label", HEADS)
def test_loss_falls_on_a_learnable_problem(multi_label):
    images, labels = kit.color_images(48, num_classes=3)
    if multi_label:
        labels = keras.utils.to_categorical(labels, 3)
    model = build("resnet", multi_label=multi_label)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images, labels, epochs=8, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


def test_head_learns_on_a_frozen_backbone():
    images, labels = kit.color_images(48, num_classes=3)
    model = build("vit")
    model.freeze_backbone()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(images, labels, epochs=8, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


def test_save_is_atomic(tmp_path, monkeypatch):
    model = build()
    path = tmp_path / "model.keras"
    model.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_a_loaded_model_compiles_for_the_backend_it_runs_on(tmp_path):
    model = build()
    fresh = model.jit_compile
    # As a model saved on another backend: JAX's XLA is torch.compile on
    # PyTorch, which recompiles per batch shape.
    model.compile(jit_compile=not fresh)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.jit_compile == fresh


def test_save_needs_keras_extension(tmp_path):
    with pytest.raises(ValueError, match=".keras"):
        build().save(tmp_path / "model.h5")


def test_each_training_step_uses_only_its_own_gradient():
    # Two SGD steps from w0 must equal one step from w1 on a fresh copy: a
    # gradient left over from the first step (on torch, weights that
    # `zero_grad()` does not see) would leak into the second.
    images, labels = kit.color_images(8, num_classes=3)
    images = images.astype("float32")

    def classifier():
        keras.utils.set_random_seed(0)
        backbone, converter = kit.tiny_resnet()
        model = TransferClassifier(
            backbone, num_classes=3, image_converter=converter
        )
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        return model

    twice = classifier()
    twice.train_on_batch(images, labels)
    after_one = twice.get_weights()
    twice.train_on_batch(images, labels)
    once = classifier()
    once.set_weights(after_one)
    once.train_on_batch(images, labels)
    for a, b in zip(twice.get_weights(), once.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_calling_the_model_directly_is_inference():
    # `model(x)` must not run BatchNorm in training mode: Keras' Resizing
    # inside the converter defaults to training=True and would otherwise
    # switch the whole call to it.
    model = build("resnet")
    images = kit.random_images(4)
    expected = model.predict(images, verbose=0)
    stats = [w for w in model.weights if "moving" in w.path]
    before = [keras.ops.convert_to_numpy(w).copy() for w in stats]
    outputs = keras.ops.convert_to_numpy(model(images))
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    for old, variable in zip(before, stats, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(variable))
