import pathlib
import socket

import keras
import kit
import numpy as np
import pytest
import pytest_socket

from kerastl import TransferClassifier
from kerastl.models import presets


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_keras_hub_preset_loads_backbone_weights(family, tmp_path):
    saved = kit.save_tiny_preset(family, tmp_path / family)
    model = TransferClassifier.from_preset(tmp_path / family, num_classes=5)
    assert model.num_classes == 5
    for ours, theirs in zip(model.backbone.weights, saved.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
        )
    assert model.image_converter.get_config()["scale"] is not None


@pytest.mark.parametrize(
    "multi_label", [False, True], ids=["softmax", "sigmoid"]
)
def test_preset_round_trip(multi_label, tmp_path):
    kit.save_tiny_preset("resnet", tmp_path / "base")
    names = ["cat", "dog", "fox"]
    model = TransferClassifier.from_preset(
        tmp_path / "base", class_names=names, multi_label=multi_label
    )
    images, labels = kit.color_images(8, num_classes=3)
    if multi_label:
        labels = keras.utils.to_categorical(labels, 3)
    model.fit(images, labels, epochs=1, verbose=0)
    model.save_to_preset(tmp_path / "trained")

    restored = TransferClassifier.from_preset(tmp_path / "trained")
    assert restored.class_names == names
    assert restored.multi_label == multi_label
    assert restored.num_classes == 3
    np.testing.assert_allclose(
        restored.predict(images, verbose=0),
        model.predict(images, verbose=0),
        atol=1e-6,
    )


def test_new_num_classes_replaces_the_head(tmp_path):
    kit.save_tiny_preset("vit", tmp_path / "base")
    model = TransferClassifier.from_preset(
        tmp_path / "base", class_names=["a", "b", "c"]
    )
    model.save_to_preset(tmp_path / "trained")
    other = TransferClassifier.from_preset(tmp_path / "trained", num_classes=4)
    assert other.num_classes == 4
    assert other.class_names is None
    # The backbone is still the trained one.
    for ours, theirs in zip(
        other.backbone.weights, model.backbone.weights, strict=True
    ):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
        )


def _head_weights(model):
    return [
        keras.ops.convert_to_numpy(w)
        for layer in model.head_layers
        for w in layer.weights
    ]


def test_other_class_names_replace_the_head(tmp_path):
    # Pretrained on three classes, fine-tuned on three others: the saved
    # head has the right shape but scores the wrong classes.
    kit.save_tiny_preset("resnet", tmp_path / "base")
    model = TransferClassifier.from_preset(
        tmp_path / "base", class_names=["a", "b", "c"]
    )
    images, labels = kit.color_images(8, num_classes=3)
    model.fit(images, labels, epochs=1, verbose=0)
    model.save_to_preset(tmp_path / "trained")
    saved = _head_weights(model)

    same = TransferClassifier.from_preset(
        tmp_path / "trained", class_names=["a", "b", "c"]
    )
    for ours, theirs in zip(_head_weights(same), saved, strict=True):
        np.testing.assert_array_equal(ours, theirs)

    other = TransferClassifier.from_preset(
        tmp_path / "trained", class_names=["d", "e", "f"]
    )
    assert other.class_names == ["d", "e", "f"]
    kernel = next(w for w in _head_weights(other) if w.ndim == 2)
    saved_kernel = next(w for w in saved if w.ndim == 2)
    assert not np.allclose(kernel, saved_kernel)
    assert not any(np.any(w) for w in _head_weights(other) if w.ndim == 1)


def test_save_to_preset_replaces_whole(tmp_path):
    kit.save_tiny_preset("vit", tmp_path / "base")
    model = TransferClassifier.from_preset(tmp_path / "base", num_classes=2)
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("from an older save")
    model.save_to_preset(target)
    assert not (target / "stale.txt").exists()
    assert (target / presets.HEAD_CONFIG_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "out"]


def test_preset_without_head_needs_num_classes(tmp_path):
    kit.save_tiny_preset("vit", tmp_path / "base")
    with pytest.raises(ValueError, match="num_classes"):
        TransferClassifier.from_preset(tmp_path / "base")


def test_unknown_preset_is_a_short_error():
    with pytest.raises(ValueError) as info:
        TransferClassifier.from_preset("vit_base_patch16_224_imagenett", 3)
    assert "vit_base_patch16_224_imagenet" in str(info.value)


def test_network_is_blocked_in_tests():
    with pytest.raises(pytest_socket.SocketBlockedError):
        socket.create_connection(("127.0.0.1", 9))


def test_preset_without_preprocessing_is_an_error(tmp_path):
    backbone, _ = kit.tiny_vit()
    backbone.save_to_preset(str(tmp_path / "bare"))
    with pytest.raises(ValueError, match="no image preprocessing"):
        TransferClassifier.from_preset(tmp_path / "bare", num_classes=2)


@pytest.mark.large
@pytest.mark.parametrize(
    "preset, image_size, width",
    [
        ("resnet_50_imagenet", (224, 224), 2048),
        ("vit_base_patch16_224_imagenet", (224, 224), 768),
    ],
)
def test_real_presets(preset, image_size, width):
    model = TransferClassifier.from_preset(preset, num_classes=2)
    assert model.image_size == image_size
    features = model.feature_extractor().predict(
        kit.random_images(1, image_size[0]), verbose=0
    )
    assert features.shape == (1, width)


def test_preset_without_weights_says_to_train_from_scratch():
    architecture = pathlib.Path(__file__).parents[1] / "recipes" / "presets"
    with pytest.raises(ValueError, match="pretrained=False"):
        TransferClassifier.from_preset(
            architecture / "fashion_resnet", num_classes=5
        )
    model = TransferClassifier.from_preset(
        architecture / "fashion_resnet", num_classes=5, load_weights=False
    )
    assert model.num_classes == 5
