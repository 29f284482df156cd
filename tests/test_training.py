import keras
import kit
import numpy as np
import pytest

import kerastl
from kerastl import Stage
from kerastl import TransferClassifier


def build(family="resnet"):
    backbone, converter = kit.TINY_BACKBONES[family]()
    return TransferClassifier(
        backbone, num_classes=3, image_converter=converter
    )


def data(count=16, batch_size=4):
    images, labels = kit.color_images(count, num_classes=3)
    return kit.ClassifierTestCase.dataset(images, labels, batch_size)


def test_stages_number_epochs_on_and_log_rates():
    model = build()
    stages = [
        Stage(epochs=2, train="head", learning_rate=1e-2, name="head"),
        Stage(
            epochs=2,
            train=1,
            learning_rate=1e-3,
            schedule="step",
            decay_epochs=1,
            decay_rate=0.5,
            name="last",
        ),
    ]
    rows = kerastl.fine_tune(
        model, data(), data(8), stages, print_fn=lambda _: None, verbose=0
    )
    assert [(r["stage"], r["epoch"]) for r in rows] == [
        ("head", 1),
        ("head", 2),
        ("last", 3),
        ("last", 4),
    ]
    # 4 steps per epoch; the step schedule halves the rate every epoch.
    rates = [r["learning_rate"] for r in rows]
    np.testing.assert_allclose(rates, [1e-2, 1e-2, 5e-4, 2.5e-4], rtol=1e-5)
    assert all("val_loss" in r for r in rows)
    assert model.trainable_groups == 1


def test_gradual_unfreezing_adds_one_group_per_step():
    model = build("vit")
    seen = []
    original = model.fit

    def recording_fit(*args, **kwargs):
        seen.append(model.trainable_groups)
        return original(*args, **kwargs)

    model.fit = recording_fit
    stage = Stage(epochs=5, train="head", unfreeze_every=2, name="gradual")
    rows = kerastl.fine_tune(
        model, data(), stages=[stage], print_fn=lambda _: None, verbose=0
    )
    # Epochs 1-2 head only, 3-4 the last group, 5 the last two.
    assert seen == [0, 1, 2]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert len(model.trainable_weights) == 2 + 2 + len(
        model.backbone.get_layer("vit_encoder").encoder_layers[-1].weights
    )


def test_default_stages_are_head_then_all():
    model = build()
    rows = kerastl.fine_tune(model, data(), print_fn=lambda _: None, verbose=0)
    assert [r["stage"] for r in rows] == ["head", "all"]
    assert model.trainable_groups == len(model.layer_groups())


def test_stage_optimizers():
    from kerastl.train.stages import stage_optimizer

    sgd = stage_optimizer(Stage(optimizer="sgd", momentum=0.8))
    assert isinstance(sgd, keras.optimizers.SGD)
    assert sgd.momentum == pytest.approx(0.8)
    adamw = stage_optimizer(Stage(weight_decay=1e-4))
    assert isinstance(adamw, keras.optimizers.AdamW)
    assert adamw.weight_decay == pytest.approx(1e-4)
