"""`kerastl fit` and `kerastl lr-find`: training from a recipe."""

import pathlib

import click

from kerastl.cli import options
from kerastl.cli.errors import user_errors
from kerastl.utils import distribution
from kerastl.utils import logs


class _FitCommand(click.Command):
    """`kerastl fit`, whose `--help` ends with every recipe field."""

    def format_epilog(self, ctx, formatter):
        with logs.quiet_native_logs():
            from kerastl.runs import recipe_text

        formatter.write_paragraph()
        formatter.write_text(
            "Recipe fields, with their defaults (set any with --set KEY=VALUE):"
        )
        formatter.write_paragraph()
        for line in recipe_text.fields_help().splitlines():
            formatter.write(line + "\n")


@click.command(cls=_FitCommand)
@click.argument(
    "recipe_path",
    metavar="[RECIPE]",
    required=False,
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
)
@options.overrides_option
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Run directory. Defaults to runs/<recipe name>/<timestamp>.",
)
@options.backend_option
@click.option(
    "--smoke",
    is_flag=True,
    help="Synthetic data of the recipe's spec and one epoch of at most two "
    "steps per stage: checks a recipe end to end in seconds.",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path),
    help="Continue an interrupted run directory from its last completed "
    "epoch (RECIPE defaults to its recipe.json; --set still applies).",
)
@click.option(
    "--distribute",
    type=click.Choice(distribution.MODES),
    help="Use several devices: data-parallel splits each (global) batch "
    "over all of them; auto does so when there are several accelerators. "
    "Same as --set distribute=... [recipe default: auto]",
)
@click.option(
    "--precision",
    type=click.Choice(distribution.PRECISIONS),
    help="Train in 16-bit math: mixed_bfloat16 (GPUs since Ampere, TPUs), "
    "mixed_float16 (older GPUs; loss scaling) or bfloat16 weights too. "
    "The head and loss stay float32. Same as --set precision=... "
    "[recipe default: float32]",
)
@click.option(
    "--gpu-memory",
    metavar="grow|preallocate|FRACTION",
    help="How much GPU memory the backend may take: as needed, most of it "
    "at start, or a fraction of each GPU. Defaults to the backend's own "
    f"behaviour, or ${distribution.GPU_MEMORY_ENV}.",
)
def fit(
    recipe_path,
    overrides,
    output_dir,
    backend,
    smoke,
    resume_dir,
    distribute,
    precision,
    gpu_memory,
):
    """Fine-tune a model as RECIPE says and write a run directory.

    Every epoch is checkpointed; after a crash, a kill or Ctrl-C,
    `kerastl fit --resume RUN_DIR` continues where the run stopped.
    """
    options.select_backend(backend, gpu_memory)
    overrides = list(overrides)
    for key, value in (("distribute", distribute), ("precision", precision)):
        if value is not None:
            overrides.append(f"{key}={value}")
    with logs.quiet_native_logs():
        from kerastl.runs import fit as runner
        from kerastl.runs import recipe as recipes
        from kerastl.runs import recipe_text
        from kerastl.runs.overrides import apply_overrides

    if recipe_path is None and resume_dir is None:
        raise click.UsageError("Give a RECIPE file, or --resume RUN_DIR.")
    if resume_dir is not None and (smoke or output_dir):
        raise click.UsageError(
            "--resume continues a run in its own directory with its own "
            "settings; drop --smoke and --output-dir."
        )
    with user_errors():
        recipe = None
        if recipe_path is not None:
            recipe = apply_overrides(
                recipes.load_recipe(recipe_path), overrides
            )
            click.echo(
                f"Recipe {recipe_path} (in full: recipe.json in the run)"
            )
            click.echo(recipe_text.describe(recipe))
        if resume_dir is not None:
            runner.resume_recipe(
                resume_dir, recipe, () if recipe else overrides
            )
        else:
            origin = {
                "file": str(recipe_path.resolve()),
                "overrides": list(overrides),
            }
            runner.fit_recipe(
                recipe, output_dir=output_dir, smoke=smoke, origin=origin
            )


@click.command("lr-find")
@click.argument(
    "recipe_path",
    metavar="RECIPE",
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
)
@click.option(
    "--stage",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Which stage to test, 1-based. Earlier stages are not trained "
    "first: the test starts from the preset's weights with this stage's "
    "trainable layer groups and optimizer.",
)
@options.overrides_option
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Where lr_find.png and lr_find.json go. Defaults to "
    "runs/<recipe name>/lr-find-<timestamp>.",
)
@click.option(
    "--steps",
    default=100,
    show_default=True,
    type=click.IntRange(min=2),
    help="Training steps from --start-lr to --end-lr.",
)
@click.option(
    "--start-lr",
    default=1e-7,
    show_default=True,
    type=float,
    help="Learning rate of the first step.",
)
@click.option(
    "--end-lr",
    default=10.0,
    show_default=True,
    type=float,
    help="Learning rate of the last step, unless the loss diverges first.",
)
@options.backend_option
@click.option(
    "--smoke",
    is_flag=True,
    help="Synthetic data of the recipe's spec and a few steps: checks the "
    "range test end to end in seconds.",
)
def lr_find(
    recipe_path,
    stage,
    overrides,
    output_dir,
    steps,
    start_lr,
    end_lr,
    backend,
    smoke,
):
    """Suggest a learning rate for a stage of RECIPE with a range test.

    Trains for --steps steps while the learning rate grows exponentially,
    stops once the loss diverges, and writes the loss curve (lr_find.png,
    lr_find.json) and fastai's suggestions (valley, steep, minimum/10).
    Only these results are kept; no model is saved.
    """
    options.select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl.runs import lr_find as finder
        from kerastl.runs import recipe as recipes
        from kerastl.runs.overrides import apply_overrides

    with user_errors():
        recipe = apply_overrides(recipes.load_recipe(recipe_path), overrides)
        finder.lr_find_recipe(
            recipe,
            stage,
            output_dir=output_dir,
            smoke=smoke,
            num_steps=steps,
            start_lr=start_lr,
            end_lr=end_lr,
        )
