import math

import keras
import numpy as np
import pytest

from kerastl import Stage
from kerastl.optimizers import OneCycle
from kerastl.optimizers import stage_schedule


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
    from kerastl.recipe import RecipeError

    with pytest.raises(RecipeError, match="schedule"):
        Stage(schedule="linear")
    with pytest.raises(RecipeError, match="warmup_fraction"):
        Stage(warmup_fraction=1.5)
    with pytest.raises(RecipeError, match="unfreeze_every"):
        Stage(train="all", unfreeze_every=1)
