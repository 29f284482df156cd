import math

import keras
import kit
import numpy as np
import pytest

import kerastl
from kerastl import Stage
from kerastl import TransferClassifier
from kerastl.train.optimizers import LayerwiseAdam
from kerastl.train.optimizers import LayerwiseAdamW
from kerastl.train.optimizers import OneCycle
from kerastl.train.optimizers import stage_schedule
from kerastl.train.stages import stage_optimizer


def rate(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_constant_is_a_float():
    assert stage_schedule(Stage(learning_rate=0.1), 10, 3) == 0.1


def test_step_decay():
    stage = Stage(
        learning_rate=0.1, schedule="step", decay_epochs=2, decay_rate=0.5
    )
    schedule = stage_schedule(stage, steps_per_epoch=10, epochs=6)
    # Steps 0-19: 0.1; 20-39: 0.05; 40-59: 0.025.
    for step, expected in [(0, 0.1), (19, 0.1), (20, 0.05), (45, 0.025)]:
        assert rate(schedule, step) == pytest.approx(expected)


def test_warmup_cosine():
    stage = Stage(learning_rate=0.2, schedule="cosine", warmup_fraction=0.2)
    schedule = stage_schedule(stage, steps_per_epoch=10, epochs=10)
    # 100 steps: linear warmup over 20, then cosine over 80.
    assert rate(schedule, 0) == pytest.approx(0.0)
    assert rate(schedule, 10) == pytest.approx(0.1)
    assert rate(schedule, 20) == pytest.approx(0.2)
    assert rate(schedule, 60) == pytest.approx(0.1)  # half-way down
    assert rate(schedule, 100) == pytest.approx(0.0, abs=1e-7)


def test_one_cycle_matches_fastai_formula():
    schedule = OneCycle(1e-2, total_steps=100)
    start, end = 1e-2 / 25, 1e-2 / 25 / 1e4

    def cos_anneal(first, last, f):
        return last + (first - last) * (1 + math.cos(math.pi * f)) / 2

    for step in (0, 10, 25, 50, 75, 100):
        if step < 25:
            expected = cos_anneal(start, 1e-2, step / 25)
        else:
            expected = cos_anneal(1e-2, end, (step - 25) / 75)
        assert rate(schedule, step) == pytest.approx(expected, rel=1e-4)
    assert rate(schedule, 25) == pytest.approx(1e-2)


def test_one_cycle_serializes():
    schedule = OneCycle(1e-3, total_steps=40, pct_start=0.3)
    schedules = keras.optimizers.schedules
    restored = schedules.deserialize(schedules.serialize(schedule))
    assert isinstance(restored, OneCycle)
    steps = (0, 12, 40)
    np.testing.assert_allclose(
        [rate(restored, s) for s in steps], [rate(schedule, s) for s in steps]
    )


def test_bad_schedule_arguments():
    from kerastl.runs.recipe import RecipeError

    with pytest.raises(RecipeError, match="schedule"):
        Stage(schedule="linear")
    with pytest.raises(RecipeError, match="warmup_fraction"):
        Stage(warmup_fraction=1.5)
    with pytest.raises(RecipeError, match="unfreeze_every"):
        Stage(train="all", unfreeze_every=1)


def tiny_model():
    backbone, converter = kit.tiny_resnet()
    model = TransferClassifier(
        backbone, num_classes=3, image_converter=converter
    )
    model.unfreeze_backbone()
    return model


def expected_multiplier(path, decay):
    """Hand-worked: the head 1, stack2 decay, stack1 decay^2, ..."""
    for depth, prefix in enumerate(["stack2_", "stack1_", "stack0_"], 1):
        if prefix in path:
            return decay**depth
    if "predictions" in path:
        return 1.0
    return decay**4  # the stem


def values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def assert_groups_move_by_their_rates(stage, model):
    """One step with gradients of ones: SGD moves each weight by exactly its
    rate, Adam's first step by its rate times 1 / (1 + epsilon)."""
    opt = stage_optimizer(stage, model=model)
    variables = model.trainable_variables
    before = values(variables)
    opt.build(variables)
    opt.apply([keras.ops.ones(v.shape) for v in variables], variables)
    for variable, old, new in zip(
        variables, before, values(variables), strict=True
    ):
        rate = 0.1 * expected_multiplier(variable.path, 0.5)
        np.testing.assert_allclose(old - new, rate, rtol=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_each_group_moves_by_its_learning_rate(optimizer):
    stage = Stage(
        optimizer=optimizer, momentum=0.0, learning_rate=0.1, layer_decay=0.5
    )
    assert_groups_move_by_their_rates(stage, tiny_model())


def test_fit_honors_multipliers():
    """A multiplier of 0 freezes a group through `fit` on every backend."""
    model = tiny_model()
    groups = model.layer_groups()
    stem = groups[0].weights
    opt = LayerwiseAdam(1e-2, lr_multipliers={w.path: 0.0 for w in stem})
    model.compile(optimizer=opt)
    images, labels = kit.color_images(8, num_classes=3)
    stem_before = values(stem)
    head_before = values(model.output_dense.weights)
    model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    for old, new in zip(stem_before, values(stem), strict=True):
        np.testing.assert_array_equal(old, new)
    assert not np.allclose(
        head_before[0], values(model.output_dense.weights)[0]
    )


def test_weight_decay_skips_biases_and_norms():
    model = tiny_model()
    stage = Stage(optimizer="adamw", learning_rate=0.1, weight_decay=0.5)
    opt = stage_optimizer(stage, model=model)
    variables = model.trainable_variables
    before = values(variables)
    opt.build(variables)
    opt.apply([keras.ops.zeros(v.shape) for v in variables], variables)
    for variable, old, new in zip(
        variables, before, values(variables), strict=True
    ):
        # Zero gradients: only decoupled decay moves a weight, by lr * wd.
        factor = 1.0 if len(variable.shape) <= 1 else 1 - 0.1 * 0.5
        np.testing.assert_allclose(new, old * factor, rtol=1e-5, atol=1e-7)


def test_layer_decay_runs_in_fine_tune():
    model = tiny_model()
    images, labels = kit.color_images(8, num_classes=3)
    dataset = kit.ClassifierTestCase.dataset(images, labels)
    stage = Stage(train="all", layer_decay=0.7, schedule="one_cycle")
    rows = kerastl.fine_tune(
        model, dataset, stages=[stage], print_fn=lambda _: None, verbose=0
    )
    assert np.isfinite(rows[0]["loss"])
    assert isinstance(model.optimizer, LayerwiseAdamW)
    with pytest.raises(Exception, match="layer_decay"):
        Stage(layer_decay=1.5)


def test_explicit_group_multipliers():
    model = tiny_model()  # groups: stem, stack0, stack1, stack2
    stage = Stage(
        optimizer="sgd",
        momentum=0.0,
        learning_rate=0.1,
        lr_multipliers=(0.0625, 0.125, 0.25, 0.5),
    )
    assert_groups_move_by_their_rates(stage, model)
    with pytest.raises(ValueError, match="one learning-rate multiplier per"):
        stage_optimizer(Stage(lr_multipliers=(1.0, 1.0)), model=model)
