"""The learning-rate range test of one stage of a recipe.

`kerastl lr-find RECIPE` loads the recipe's data and model as `kerastl fit`
does, runs `kerastl.train.lr_find.lr_find` on the chosen stage and writes
the curve and the suggestions; no model is kept.
"""

import datetime
import json
import pathlib

import keras

from kerastl.runs import build
from kerastl.runs import rundir
from kerastl.train import lr_find
from kerastl.utils import atomic

PLOT_FILE = "lr_find.png"
RESULT_FILE = "lr_find.json"


def default_output_dir(recipe):
    """`runs/<recipe name>/lr-find-<timestamp>`.

    Example:
    ```python
    # runs/pets/lr-find-2026...
    kerastl.runs.lr_find.default_output_dir(recipe)
    ```
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return rundir.default_parent(recipe.name) / f"lr-find-{stamp}"


def lr_find_recipe(
    recipe,
    stage=1,
    *,
    output_dir=None,
    smoke=False,
    num_steps=100,
    start_lr=1e-7,
    end_lr=10.0,
    print_fn=print,
):
    """Runs the range test for one stage of a recipe; writes its results.

    Loads the recipe's data and model as `kerastl fit` does. Earlier stages
    are not trained first: the test starts from the preset's weights with
    the stage's trainable groups and optimizer. Writes `lr_find.png` and
    `lr_find.json` (the curve, the suggestions, the stage, the recipe).

    Args:
        recipe: a `kerastl.Recipe`, overrides already applied.
        stage: int. The stage to test, 1-based. Defaults to `1`.
        output_dir: path or `None`. Defaults to `default_output_dir`.
        smoke: bool. Synthetic data of the recipe's spec and at most
            `kerastl.train.lr_find.SMOKE_STEPS` steps. Defaults to `False`.
        num_steps: int. Defaults to `100`.
        start_lr: float. Defaults to `1e-7`.
        end_lr: float. Defaults to `10.0`.
        print_fn: callable for console output.

    Returns:
        `(result, output_dir)`: the `LRFindResult` and a `pathlib.Path`.

    Example:
    ```python
    result, out = kerastl.runs.lr_find.lr_find_recipe(recipe, stage=2)
    ```
    """
    chosen = _chosen_stage(recipe, stage)
    if smoke:
        num_steps = min(num_steps, lr_find.SMOKE_STEPS)
    output_dir = pathlib.Path(output_dir or default_output_dir(recipe))
    keras.utils.set_random_seed(recipe.seed)
    converter = build.load_converter(recipe)
    bundle = build.load_recipe_data(recipe, converter.image_size, smoke=smoke)
    model = build.build_model(recipe, bundle.class_names, converter)
    _announce(recipe, stage, num_steps, start_lr, end_lr, print_fn)
    result = lr_find.lr_find(
        model,
        bundle.splits["train"],
        chosen,
        start_lr=start_lr,
        end_lr=end_lr,
        num_steps=num_steps,
        label_smoothing=recipe.label_smoothing,
    )
    if result.stopped_early:
        print_fn(
            f"Stopped after {len(result.losses)} steps: the loss diverged."
        )
    settings = {
        "stage": stage,
        "stage_name": chosen.name,
        "smoke": smoke,
        "start_lr": start_lr,
        "end_lr": end_lr,
        "num_steps": num_steps,
    }
    _write_results(result, settings, recipe, output_dir)
    print_fn(lr_find.format_suggestions(result))
    print_fn(
        f"Suggested learning rate: {result.suggestion:.3g} "
        f"({lr_find.METHOD}); set it with --set stages.{stage}."
        f"learning_rate={result.suggestion:.3g}"
    )
    print_fn(f"Plot and curve: {output_dir}")
    return result, output_dir


def _chosen_stage(recipe, stage):
    count = len(recipe.stages)
    if not 1 <= stage <= count:
        raise ValueError(
            f"The recipe has {count} stage(s), numbered 1 to {count}; pick "
            f"one of them to test. Received: stage={stage}"
        )
    return recipe.stages[stage - 1]


def _announce(recipe, stage, num_steps, start_lr, end_lr, print_fn):
    chosen, count = recipe.stages[stage - 1], len(recipe.stages)
    what = {"head": "head only", "all": "all layer groups"}.get(
        chosen.train, f"last {chosen.train} layer group(s) + head"
    )
    print_fn(
        f"Learning-rate range test, stage {stage}/{count} '{chosen.name}' "
        f"({what}, {chosen.optimizer}): {num_steps} steps from "
        f"{start_lr:g} to {end_lr:g}."
    )
    if stage > 1:
        print_fn(
            f"Stages before {stage} are not trained first: the test starts "
            "from the preset's weights."
        )


def _write_results(result, settings, recipe, output_dir):
    output_dir.mkdir(parents=True, exist_ok=True)
    lr_find.plot(result, output_dir / PLOT_FILE)
    summary = {
        **settings,
        "backend": keras.config.backend(),
        **result.to_dict(),
        "recipe": recipe.to_dict(),
    }
    with atomic.atomic_path(output_dir / RESULT_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
