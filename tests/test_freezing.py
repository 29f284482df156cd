import warnings

import keras
import kit
import numpy as np
import pytest

from kerastl import TransferClassifier
from kerastl.models import freezing

HEAD_WEIGHTS = 2  # kernel and bias of the Dense output layer


def build(family):
    backbone, converter = kit.TINY_BACKBONES[family]()
    return TransferClassifier(
        backbone, num_classes=3, image_converter=converter
    )


def resnet_stage_weights(backbone, stage, batchnorm):
    """Weights of the layers keras-hub named `stack{stage}_...`."""
    return sum(
        len(layer.weights)
        for layer in backbone.layers
        if layer.name.startswith(f"stack{stage}_")
        and isinstance(layer, keras.layers.BatchNormalization) == batchnorm
    )


def test_resnet_trainable_counts():
    model = build("resnet")
    backbone = model.backbone
    all_trainable = len(model.trainable_weights)
    assert all_trainable == len(backbone.trainable_weights) + HEAD_WEIGHTS

    model.freeze_backbone()
    assert len(model.trainable_weights) == HEAD_WEIGHTS

    # Last stage: its convolutions train; its BatchNorms stay frozen.
    model.unfreeze_backbone(last_n=1)
    convs = resnet_stage_weights(backbone, 2, batchnorm=False)
    assert convs > 0
    assert len(model.trainable_weights) == HEAD_WEIGHTS + convs

    # With train_bn, BatchNorm gamma and beta train too (2 per layer).
    model.unfreeze_backbone(last_n=1, train_bn=True)
    bn = resnet_stage_weights(backbone, 2, batchnorm=True) // 4 * 2
    assert len(model.trainable_weights) == HEAD_WEIGHTS + convs + bn

    # Everything: every weight but the BatchNorm ones.
    model.unfreeze_backbone()
    bn_layers = [
        layer
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    expected = all_trainable - 2 * len(bn_layers)
    assert len(model.trainable_weights) == expected
    model.unfreeze_backbone(train_bn=True)
    assert len(model.trainable_weights) == all_trainable


def test_vit_trainable_counts():
    model = build("vit")
    encoder = model.backbone.get_layer("vit_encoder")
    model.freeze_backbone()
    assert len(model.trainable_weights) == HEAD_WEIGHTS
    model.unfreeze_backbone(last_n=1)  # the final LayerNorm: gamma, beta
    assert len(model.trainable_weights) == HEAD_WEIGHTS + 2
    model.unfreeze_backbone(last_n=2)
    block = len(encoder.encoder_layers[-1].weights)
    assert len(model.trainable_weights) == HEAD_WEIGHTS + 2 + block
    model.unfreeze_backbone()
    assert len(model.trainable_weights) == HEAD_WEIGHTS + len(
        model.backbone.weights
    )


def test_last_n_out_of_range():
    model = build("vit")
    with pytest.raises(ValueError, match="between 0 and 4"):
        model.unfreeze_backbone(last_n=5)


def moving_stats(model):
    return [
        keras.ops.convert_to_numpy(w).copy()
        for w in model.backbone.non_trainable_weights
        if "moving" in w.path
    ]


@pytest.mark.parametrize(
    "unfreeze",
    [
        pytest.param(None, id="frozen"),
        pytest.param(dict(last_n=1), id="last-stage"),
        pytest.param(dict(), id="all"),
    ],
)
def test_batchnorm_statistics_frozen_by_fit(unfreeze):
    model = build("resnet")
    model.freeze_backbone()
    if unfreeze is not None:
        model.unfreeze_backbone(**unfreeze)
    before = moving_stats(model)
    images, labels = kit.color_images(16, num_classes=3)
    model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
    for old, new in zip(before, moving_stats(model), strict=True):
        np.testing.assert_array_equal(old, new)


def test_train_bn_updates_statistics():
    model = build("resnet")
    model.unfreeze_backbone(last_n=1, train_bn=True)
    before = moving_stats(model)
    images, labels = kit.color_images(16, num_classes=3)
    model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(before, moving_stats(model), strict=True)
    ]
    assert any(changed)


def test_unfreezing_recompiles_with_new_weights_training():
    model = build("vit")
    model.freeze_backbone()
    images, labels = kit.color_images(8, num_classes=3)
    model.fit(images, labels, epochs=1, verbose=0)
    model.unfreeze_backbone(last_n=1)
    norm = model.backbone.get_layer("vit_encoder").layer_norm
    before = keras.ops.convert_to_numpy(norm.gamma).copy()
    model.fit(images, labels, epochs=1, verbose=0)
    assert not np.array_equal(before, keras.ops.convert_to_numpy(norm.gamma))


def test_auto_learning_rate_follows_freezing():
    model = build("vit")
    model.freeze_backbone()
    assert np.isclose(float(model.optimizer.learning_rate), 1e-3)
    model.unfreeze_backbone()
    assert np.isclose(float(model.optimizer.learning_rate), 1e-5)


def test_user_optimizer_survives_recompile():
    model = build("resnet")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    model.freeze_backbone()
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert np.isclose(float(model.optimizer.learning_rate), 0.05)
    assert np.isclose(model.optimizer.momentum, 0.9)


def test_fit_recompiles_after_manual_trainable_change():
    model = build("vit")
    model.freeze_backbone()
    images, labels = kit.color_images(8, num_classes=3)
    model.fit(images, labels, epochs=1, verbose=0)
    norm = model.backbone.get_layer("vit_encoder").layer_norm
    model.backbone.trainable = True
    norm.trainable = True
    before = keras.ops.convert_to_numpy(norm.gamma).copy()
    with pytest.warns(UserWarning, match="recompiled"):
        model.fit(images, labels, epochs=1, verbose=0)
    assert not np.array_equal(before, keras.ops.convert_to_numpy(norm.gamma))
    # Compiled again: no second warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(images, labels, epochs=1, verbose=0)


def test_freeze_state_survives_saving(tmp_path):
    model = build("resnet")
    model.unfreeze_backbone(last_n=1)
    count = len(model.trainable_weights)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert len(restored.trainable_weights) == count
    assert restored.trainable_groups == 1


def test_trainable_summary_table():
    model = build("resnet")
    model.unfreeze_backbone(last_n=1)
    rows = {row.name: row for row in freezing.trainable_audit(model)}
    stage = model.layer_groups()[-1]
    trainable = sum(int(np.prod(w.shape)) for w in stage.weights if w.trainable)
    assert rows["stack2"].trainable_params == trainable
    assert rows["stack2"].batchnorm == "inference"
    assert rows["stem"].trainable_params == 0
    # 3 classes x 16 features + 3 biases.
    assert rows["head"].trainable_params == 16 * 3 + 3
    printed = []
    model.trainable_summary(print_fn=printed.append)
    lines = printed[0].splitlines()
    assert lines[0].split() == ["group", "trainable", "frozen", "batchnorm"]
    stack2 = next(line for line in lines if line.startswith("stack2"))
    assert f"{trainable:,}" in stack2
    total = model.count_params() - model.image_converter.count_params()
    row_total = lines[-1].split()
    assert (
        int(row_total[1].replace(",", "")) + int(row_total[2].replace(",", ""))
        == total
    )
