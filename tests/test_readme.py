"""The README's Python quickstart runs as written, on a local preset, and
every `kerastl` command, option, `--set` key and `field=value` written in
README.md and docs/*.md exists in the code."""

import pathlib
import re

import kit
import numpy as np

README = pathlib.Path(__file__).parents[1] / "README.md"
# The pages whose commands and fields are checked against the code.
PAGES = [README, *sorted((README.parent / "docs").glob("*.md"))]


def quickstart_code():
    text = README.read_text()
    section = text.split("## Python quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_python_quickstart(tmp_path, monkeypatch):
    code = quickstart_code()
    assert '"resnet_50_imagenet"' in code
    kit.save_tiny_preset("resnet", tmp_path / "resnet_tiny")
    # The real preset is 224x224; the stand-in takes 32x32 images.
    code = code.replace(
        '"resnet_50_imagenet"', repr(str(tmp_path / "resnet_tiny"))
    )
    images, labels = kit.color_images(37 * 2, num_classes=37)
    dataset = kit.ClassifierTestCase.dataset(images, labels, batch_size=16)
    monkeypatch.chdir(tmp_path)
    namespace = {"train_ds": dataset, "val_ds": dataset}
    exec(compile(code, "README.md", "exec"), namespace)
    model = namespace["model"]
    assert model.num_classes == 37
    assert (tmp_path / "pets.keras").exists()
    assert (tmp_path / "pets_preset" / "kerastl.json").exists()
    assert np.isfinite(model.predict(images[:2], verbose=0)).all()


def _spans():
    """Every command line and inline code span of the README and of
    docs/*.md, with line breaks inside a span folded to spaces."""
    return [span for page in PAGES for span in _page_spans(page.read_text())]


def _page_spans(text):
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.DOTALL)
    lines = [
        line.split("#")[0].strip()
        for language, body in blocks
        if language != "python"
        for line in body.splitlines()
    ]
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    inline = [
        " ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)
    ]
    return lines + inline


def _commands():
    for span in _spans():
        for command in re.split(r"&&|\|", span):
            words = command.split()
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # KERAS_BACKEND=jax kerastl ...
            if words[:1] == ["kerastl"] and len(words) > 1:
                yield words[1:]


def test_the_docs_pages_are_checked():
    names = {page.name for page in PAGES}
    assert {"cli.md", "recipes.md", "run-directory.md"} <= names
    assert any("kerastl fit --resume" in span for span in _spans())


def test_every_kerastl_command_in_the_readme_exists():
    import click

    from kerastl.cli import cli

    checked = 0
    for words in _commands():
        group_options = {"-v", "--verbose", "--version", "-h", "--help"}
        if words[0] in group_options:
            continue
        name = words[0]
        assert name in cli.commands, f"kerastl {name}: no such command"
        command = cli.commands[name]
        options = {
            opt
            for param in command.params
            if isinstance(param, click.Option)
            for opt in param.opts + param.secondary_opts
        } | {"-h", "--help"}
        for word in words[1:]:
            option = word.strip("[]").split("=")[0]
            if option.startswith("--"):
                assert option in options, f"kerastl {name} has no {option}"
        checked += 1
    assert checked >= 20


def test_every_override_in_the_readme_applies():
    from kerastl.runs.overrides import apply_overrides
    from kerastl.runs.recipe import load_recipe

    recipe = load_recipe(README.parent / "recipes" / "pets.py")
    overrides = set()
    for span in _spans():
        overrides.update(re.findall(r"--set ([\w.]+=\S+)", span))
    assert len(overrides) >= 8
    for override in overrides:
        if override.split("=")[1].isupper():
            continue  # a placeholder: --set teacher=PATH
        apply_overrides(recipe, [override])


def test_every_field_value_in_the_readme_is_valid():
    """`schedule="cosine"`-style values in inline code build their object."""
    import ast
    import dataclasses

    from kerastl import Recipe
    from kerastl import Stage
    from kerastl.data import Augment

    owners = {
        field.name: cls
        for cls in (Augment, Stage, Recipe)
        for field in dataclasses.fields(cls)
        if field.name not in ("name", "data", "stages", "augment")
    }
    checked = 0
    for span in _spans():
        for key, value in re.findall(r"^(\w+)=(\"[^\"]*\"|[\w.+-]+)$", span):
            if key not in owners:
                continue
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                continue  # a name, e.g. teacher=PATH
            cls = owners[key]
            if cls is Recipe:
                Recipe(name="r", preset="p", data=None, **{key: value})
            else:
                cls(**{key: value})
            checked += 1
    assert checked >= 10
