"""A recipe in words: the summary `kerastl fit` prints before it trains, and
the list of every field with its default that ends `kerastl fit --help`.
"""

import dataclasses
import pathlib
import re

from kerastl.data import Augment
from kerastl.data import DataSpec
from kerastl.runs.recipe import Recipe
from kerastl.train.stage import Stage
from kerastl.utils import text


def _changed(obj, skip=()):
    """`(field, value)` of `obj`'s fields that differ from their defaults."""
    changed = []
    for field in dataclasses.fields(obj):
        if field.name in skip:
            continue
        value = getattr(obj, field.name)
        default = field.default
        if default is dataclasses.MISSING or value != default:
            changed.append((field.name, value))
    return changed


def _show(value):
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return f"<{len(value)} arrays>"
    return str(value)


# Stage fields shown as columns of the stage table; others go to "other".
_STAGE_COLUMNS = ("train", "epochs", "optimizer", "learning_rate")


def describe(recipe):
    """The recipe in a few lines: what `kerastl fit` prints at the start.

    Name, preset and data, then every other field that differs from its
    default, then the stages as a table numbered as `--set stages.N` and
    the stage headers number them. `recipe.json` holds all of it.

    Args:
        recipe: a `kerastl.Recipe`.

    Returns:
        A str of several lines.

    Example:
    ```python
    print(kerastl.runs.recipe.describe(recipe))
    ```
    """
    data = recipe.data
    where = " ".join(str(v) for v in (data.source, data.name) if v)
    details = ", ".join(
        f"{key} {_show(value)}"
        for key, value in _changed(data, skip=("source", "name"))
    )
    lines = [
        f"{recipe.name}: {recipe.preset} on {where}"
        + (f" ({details})" if details else "")
    ]
    settings = [
        f"{key}={_show(value)}"
        for key, value in _changed(
            recipe, skip=("name", "preset", "data", "stages", "augment")
        )
    ]
    settings += [
        f"augment.{key}={_show(value)}"
        for key, value in _changed(recipe.augment)
    ]
    if settings:
        lines.append("  " + ", ".join(settings))
    rows = [("stage", "name", *_STAGE_COLUMNS[:3], "lr", "other")]
    for number, stage in enumerate(recipe.stages, start=1):
        other = ", ".join(
            f"{key}={_show(value)}"
            for key, value in _changed(stage, skip=(*_STAGE_COLUMNS, "name"))
        )
        rows.append(
            (
                str(number),
                stage.name,
                *(_show(getattr(stage, key)) for key in _STAGE_COLUMNS),
                other,
            )
        )
    lines.append(text.columns(rows, indent="  "))
    return "\n".join(lines)


def _field_docs(cls):
    """`{field: first sentence}` from the `Args:` section of `cls`'s
    docstring, where every field is documented as `name: type. Text`."""
    docs = {}
    current = None
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        head, sep, text = stripped.partition(": ")
        indent = len(line) - len(line.lstrip())
        if sep and indent == 8 and head.isidentifier():
            current = head
            docs[current] = text
        elif current and stripped and indent > 8:
            docs[current] += " " + stripped
        else:
            current = None
    summaries = {}
    for name, text in docs.items():
        # "int. Patience in epochs: ... Defaults to `0`.": drop the type
        # (the default is shown apart), keep the first sentence after it.
        text = " ".join(text.split()).replace("e.g. ", "e.g.\0")
        sentences = text.split(". ")
        # A type is short ("str or `None`"); a long first sentence is the
        # description itself.
        if len(sentences[0]) <= 32:
            sentences = sentences[1:]
        summary = sentences[0].rstrip(".") if sentences else ""
        summary = summary.replace("e.g.\0", "e.g. ")
        if re.fullmatch(r"Defaults to `[^`]*`", summary):
            summary = ""
        summaries[name] = summary
    return summaries


def fields_help():
    """Every recipe field with its default and a line on what it does.

    What `kerastl fit --help` ends with; the same keys `--set` takes.

    Example:
    ```python
    print(kerastl.runs.recipe.fields_help())
    ```
    """
    sections = (
        ("Recipe", Recipe, ""),
        ("DataSpec (data.*)", DataSpec, "data."),
        ("Augment (augment.*)", Augment, "augment."),
        (
            "Stage (stages.N.*: N from 1, as in the stage headers, or the "
            "stage's name)",
            Stage,
            "stages.N.",
        ),
    )
    lines = []
    for title, cls, prefix in sections:
        lines.append(f"{title}:")
        docs = _field_docs(cls)
        for field in dataclasses.fields(cls):
            if field.default is dataclasses.MISSING:
                default = "required"
            elif dataclasses.is_dataclass(field.default):
                default = f"{type(field.default).__name__}()"
            elif field.name == "stages":
                default = "(Stage(),)"
            else:
                default = repr(field.default)
            text = docs.get(field.name, "")
            lines.append(f"  {prefix}{field.name} [{default}] {text}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip()


def python_source(recipe, docstring):
    """The recipe as a recipe file: Python that `kerastl fit` can run.

    Only fields that differ from their defaults are written.

    Args:
        recipe: a `kerastl.Recipe` whose data is not in-memory arrays
            (they have no text form).
        docstring: str. The file's docstring.

    Returns:
        A str.

    Example:
    ```python
    pathlib.Path("best.py").write_text(
        kerastl.runs.recipe_text.python_source(recipe, "The winner.")
    )
    ```
    """
    check_text_form(recipe)
    lines = [f'"""{docstring}"""', ""]
    lines += [f"from kerastl import {name}" for name in ("Recipe", "Stage")] + [
        f"from kerastl.data import {name}" for name in ("Augment", "DataSpec")
    ]
    lines += ["", "recipe = Recipe("]
    for key, value in _changed(recipe):
        if key == "stages":
            lines.append("    stages=(")
            lines += [f"        {_call(stage)}," for stage in value]
            lines.append("    ),")
        elif dataclasses.is_dataclass(value):
            lines.append(f"    {key}={_call(value)},")
        else:
            lines.append(f"    {key}={value!r},")
    lines.append(")")
    return "\n".join(lines) + "\n"


def check_text_form(recipe):
    """Refuses a recipe that cannot be written as a file (in-memory arrays).

    Example:
    ```python
    kerastl.runs.recipe_text.check_text_form(recipe)
    ```
    """
    if recipe.data.source == "arrays":
        raise ValueError(
            "A recipe of in-memory arrays cannot be written as a file: the "
            "arrays have no text form. Save the images to a folder or CSV "
            "and point a recipe at it."
        )


def _call(obj):
    arguments = ", ".join(f"{key}={value!r}" for key, value in _changed(obj))
    return f"{type(obj).__name__}({arguments})"


def write_recipe(recipe, path, docstring):
    """Writes `python_source(recipe, docstring)` to a new file `path`.

    Never replaces a file: the recipe might be one the user wrote.

    Args:
        recipe: a `kerastl.Recipe`.
        path: path of a `.py` file that does not exist yet.
        docstring: str.

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    kerastl.runs.recipe_text.write_recipe(recipe, "best.py", "The winner.")
    ```
    """
    path = check_new_recipe_file(path)
    source = python_source(recipe, docstring)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Exclusive creation: a file that appeared meanwhile is not replaced.
    with open(path, "x", encoding="utf-8") as file:
        file.write(source)
    return path


def check_new_recipe_file(path):
    """Refuses a recipe path that exists or is not a `.py` file.

    Example:
    ```python
    kerastl.runs.recipe_text.check_new_recipe_file("recipes/best.py")
    ```
    """
    path = pathlib.Path(path)
    if path.suffix != ".py":
        raise ValueError(
            f"A recipe file ends in .py so that `kerastl fit` can import "
            f"it. Received: {path}"
        )
    if path.exists():
        raise ValueError(
            f"{path} exists; kerastl never replaces a file it may not have "
            "written. Give a new path."
        )
    return path
