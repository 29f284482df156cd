import dataclasses
import json
import pathlib
import re

import kit
import numpy as np
import pytest

import kerastl
from kerastl import Recipe
from kerastl import Stage
from kerastl.data import DataSpec
from kerastl.models.presets import load_image_converter
from kerastl.runs.build import build_model
from kerastl.runs.overrides import apply_overrides
from kerastl.runs.overrides import override_keys
from kerastl.runs.recipe import RecipeError
from kerastl.runs.recipe import load_recipe
from kerastl.runs.recipe_text import describe
from kerastl.runs.recipe_text import fields_help

FIXTURES = pathlib.Path(__file__).parent / "recipes"
BUNDLED = sorted((pathlib.Path(__file__).parents[1] / "recipes").glob("*.py"))


def test_loads_recipe_object():
    recipe = load_recipe(FIXTURES / "valid.py")
    assert recipe.name == "valid"
    assert [s.name for s in recipe.stages] == ["stage1", "stage2"]
    assert recipe.stages[1].train == 1


def test_single_unnamed_recipe_is_found():
    assert load_recipe(FIXTURES / "single_unnamed.py").name == "unnamed"


@pytest.mark.parametrize(
    "fixture, message",
    [
        ("missing.py", "does not exist"),
        ("no_recipe.py", "defines no kerastl.Recipe"),
        ("two_recipes.py", "2 kerastl.Recipe objects"),
        ("wrong_type.py", "must be a kerastl.Recipe"),
        ("import_error.py", "kerastl_does_not_exist"),
    ],
)
def test_loader_errors(fixture, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(FIXTURES / fixture)


def test_import_error_shows_traceback():
    with pytest.raises(RecipeError) as info:
        load_recipe(FIXTURES / "import_error.py")
    assert "Traceback" in str(info.value)
    assert "import_error.py" in str(info.value)


def test_overrides_are_typed_and_nested():
    recipe = load_recipe(FIXTURES / "valid.py")
    recipe = apply_overrides(
        recipe,
        [
            "stages.2.epochs=3",
            "stages.1.train=all",
            "stages.stage2.train=2",
            "preset=./my_preset",
            "batch_size=8",
            "augment.flip=false",
            "image_size=64,48",
            "data.data_dir=/data/tfds",
            "data.validation_fraction=0.2",
            "num_classes=none",
            "stages.stage1.learning_rate=3e-4",
            "stages.2.lr_multipliers=0.1,0.5,1",
        ],
    )
    assert recipe.stages[1].lr_multipliers == (0.1, 0.5, 1)
    assert recipe.stages[1].epochs == 3
    assert recipe.stages[0].train == "all"
    assert recipe.stages[1].train == 2
    assert recipe.preset == "./my_preset"
    assert recipe.batch_size == 8
    assert recipe.augment.flip is False
    assert recipe.image_size == (64, 48)
    assert recipe.data.data_dir == "/data/tfds"
    assert recipe.data.validation_fraction == 0.2
    assert recipe.num_classes is None
    assert recipe.stages[0].learning_rate == 3e-4


@pytest.mark.parametrize(
    "override, message",
    [
        ("batch_sise=8", "Did you mean: batch_size"),
        ("stages.1.epoch=3", "stages.1.epochs"),
        ("stages.5.epochs=3", "Unknown recipe key 'stages.5.epochs'"),
        # Stages count from 1, as the stage headers do; the error says so.
        ("stages.0.epochs=3", "numbered 1 to 2, .* stages.stage1"),
        ("stages.warmup.epochs=3", "stages.stage1, stages.stage2"),
        ("batch_size=eight", "expected an integer"),
        ("augment.flip=maybe", "expected true or false"),
        ("stages.1.optimizer=lamb", "'sgd', 'adam' or 'adamw'"),
        ("stages.1.train=-1", "train"),
        ("preprocessing=imagenett", "imagenet, minus_one_to_one, zero_one"),
        ("no_equals_sign", "KEY=VALUE"),
    ],
)
def test_override_errors(override, message):
    recipe = load_recipe(FIXTURES / "valid.py")
    with pytest.raises(RecipeError, match=message):
        apply_overrides(recipe, [override])


def test_json_round_trip():
    recipe = load_recipe(FIXTURES / "valid.py")
    data = json.loads(json.dumps(recipe.to_dict()))
    assert Recipe.from_dict(data) == recipe


def test_stage_validation():
    with pytest.raises(RecipeError, match="at least one epoch"):
        Stage(epochs=0)
    with pytest.raises(RecipeError, match="non-empty"):
        Recipe(name="x", preset="p", data=None, stages=())
    with pytest.raises(RecipeError, match=r"ema .* in \[0, 1\)"):
        Stage(ema=1.0)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"label_smoothing": 1.0}, r"label_smoothing .* \[0, 1\)"),
        ({"early_stopping": -1}, "patience in epochs"),
        (
            {"early_stopping": 2, "stages": (Stage(ema=0.99),)},
            "cannot be combined",
        ),
    ],
)
def test_recipe_regularization_validation(fields, message):
    with pytest.raises(RecipeError, match=message):
        Recipe(name="x", preset="p", data=None, **fields)


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_recipes_load(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    fine_tunes = any(stage.train != "head" for stage in recipe.stages)
    if recipe.pretrained and fine_tunes:
        # Staged unfreezing: a new head on frozen features first.
        assert len(recipe.stages) >= 2
        assert recipe.stages[0].train == "head"


def test_pretrained_false_starts_from_random_weights(tmp_path):
    saved = kit.save_tiny_preset("resnet", tmp_path / "preset")
    recipe = Recipe(
        name="r", preset=str(tmp_path / "preset"), data=DataSpec("arrays")
    )
    converter = load_image_converter(recipe.preset)
    pretrained = build_model(recipe, ["a", "b"], converter)
    scratch = build_model(
        dataclasses.replace(recipe, pretrained=False), ["a", "b"], converter
    )
    kernels = [
        (np.asarray(s), np.asarray(p), np.asarray(r))
        for s, p, r in zip(
            saved.weights,
            pretrained.backbone.weights,
            scratch.backbone.weights,
            strict=True,
        )
        if "kernel" in s.path
    ]
    assert kernels
    for saved_kernel, pretrained_kernel, scratch_kernel in kernels:
        np.testing.assert_array_equal(pretrained_kernel, saved_kernel)
        assert not np.allclose(scratch_kernel, saved_kernel)


def test_describe_shows_what_differs_and_the_stages():
    recipe = Recipe(
        name="flowers",
        preset="resnet_50_imagenet",
        data=DataSpec("folder", "data/flowers", validation_fraction=0.2),
        batch_size=16,
        augment=kerastl.data.Augment(random_resized_crop=True),
        stages=(
            Stage(name="head", epochs=3),
            Stage(epochs=2, train="all", learning_rate=1e-5, ema=0.99),
        ),
    )
    assert describe(recipe).splitlines() == [
        "flowers: resnet_50_imagenet on folder data/flowers "
        "(validation_fraction 0.2)",
        "  batch_size=16, augment.random_resized_crop=True",
        "  stage  name    train  epochs  optimizer  lr     other",
        "  1      head    head   3       adamw      0.001",
        "  2      stage2  all    2       adamw      1e-05  ema=0.99",
    ]


def test_fields_help_lists_every_settable_field():
    recipe = load_recipe(FIXTURES / "valid.py")
    listed = {
        line.split()[0]
        for line in fields_help().splitlines()
        if line.startswith("  ")
    }
    # The keys --set takes, with stage numbers written as N.
    settable = {
        re.sub(r"^stages\.\d+\.", "stages.N.", key)
        for key in override_keys(recipe)
    }
    # Nested dataclasses are listed by their fields too; in-memory arrays
    # are listed but cannot be set from the command line.
    assert listed == settable | {"data", "augment", "stages", "data.arrays"}
