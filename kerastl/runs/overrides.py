"""`--set KEY=VALUE` overrides: recipe fields addressed by dotted keys
(`stages.2.epochs`, `stages.head.epochs`, `data.batch_size`), each value typed
by the dataclass field it replaces.
"""

import dataclasses
import difflib
import types
import typing

from kerastl.errors import RecipeError


def override_keys(recipe):
    """Every dotted key `--set` accepts for this recipe.

    Example:
    ```python
    "stages.1.epochs" in kerastl.runs.recipe.override_keys(recipe)  # True
    ```
    """
    keys = []

    def walk(obj, prefix):
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            key = f"{prefix}{field.name}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif field.name == "stages":
                for i, stage in enumerate(value):
                    walk(stage, f"{key}.{i + 1}.")
            else:
                keys.append(key)

    walk(recipe, "")
    return keys


def apply_overrides(recipe, overrides):
    """Returns `recipe` with `KEY=VALUE` overrides applied.

    Keys are dotted paths (`stages.1.epochs`, `data.data_dir`, `preset`).
    Stages are numbered from 1 as in the stage headers, or named
    (`stages.head.learning_rate`).
    Values are parsed by the field's type: `true`/`false` for booleans,
    numbers, comma-separated tuples (`image_size=224,224`), `none` for
    optional fields. An unknown key names the closest valid keys.

    Args:
        recipe: a `kerastl.Recipe`.
        overrides: iterable of `"KEY=VALUE"` strings.

    Example:
    ```python
    recipe = kerastl.runs.recipe.apply_overrides(recipe, ["stages.1.epochs=5"])
    ```
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(
                f"Overrides are written KEY=VALUE. Received: --set {item!r}"
            )
        try:
            recipe = _override(recipe, key, value.strip(), key)
        except _UnknownKey:
            close = difflib.get_close_matches(key, override_keys(recipe), n=4)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            if key.startswith("stages."):
                hint += (
                    f" Stages are numbered 1 to {len(recipe.stages)}, as in "
                    "the stage headers, or named: "
                    + ", ".join(f"stages.{s.name}" for s in recipe.stages)
                    + "."
                )
            raise RecipeError(
                f"Unknown recipe key '{key}'.{hint} `kerastl fit --help` "
                "lists the recipe fields."
            ) from None
    return recipe


class _UnknownKey(Exception):
    pass


def _override(obj, key, value, full_key):
    head, _, rest = key.partition(".")
    names = {f.name: f for f in dataclasses.fields(obj)}
    if head not in names:
        raise _unknown_key(full_key)
    current = getattr(obj, head)
    if head == "stages" and rest:
        ref, _, rest = rest.partition(".")
        index = stage_index(current, ref)
        if index is None or not rest:
            raise _unknown_key(full_key)
        stages = list(current)
        stages[index] = _override(stages[index], rest, value, full_key)
        return dataclasses.replace(obj, stages=tuple(stages))
    if dataclasses.is_dataclass(current):
        if not rest:
            raise _unknown_key(full_key)
        return dataclasses.replace(
            obj, **{head: _override(current, rest, value, full_key)}
        )
    if rest:
        raise _unknown_key(full_key)
    hint = typing.get_type_hints(type(obj))[head]
    try:
        parsed = _parse(value, hint)
    except ValueError as error:
        raise RecipeError(
            f"--set {full_key}={value}: {error}. Received: {value!r}"
        ) from None
    return dataclasses.replace(obj, **{head: parsed})


def _unknown_key(key):
    return _UnknownKey(key)


def stage_index(stages, ref):
    """The 0-based position of the stage `ref` names, or `None`.

    Stages are numbered from 1, as the stage headers of `kerastl fit` and
    `kerastl lr-find --stage` number them, or named by their `name`.

    Args:
        stages: the recipe's stages.
        ref: str. `"2"` (the second stage) or a stage name (`"head"`).

    Example:
    ```python
    kerastl.runs.recipe.stage_index(recipe.stages, "head")  # 0
    ```
    """
    if ref.isdigit():
        number = int(ref)
        return number - 1 if 1 <= number <= len(stages) else None
    names = [stage.name for stage in stages]
    return names.index(ref) if ref in names else None


def _parse(text, hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if text.lower() == "none" and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _parse(text, option)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError("; ".join(errors))
    if hint is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("expected true or false")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("expected an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    if hint is tuple or origin is tuple:
        items = [item.strip() for item in text.split(",") if item.strip()]
        return tuple(_number_or_text(item) for item in items)
    if hint is str:
        return text
    raise ValueError(f"fields of type {hint} cannot be set from the CLI")


def _number_or_text(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
