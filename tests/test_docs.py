"""The code in README.md and docs/*.md runs, so the docs cannot drift.

Every ```python block runs (the blocks of one page in order, in one
namespace, in a temporary working directory), with real preset names
replaced by tiny local presets of the same family and the names a block
uses but does not define (`train_ds`, `images`, ...) taken from a small
fixture namespace. The offline, fast commands of ```bash / ```sh /
```console blocks run as subprocesses; the others are covered elsewhere or
listed, each with a reason. A block preceded by `<!-- not-run: reason -->`
is skipped.
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import kit
import numpy as np
import pytest
import test_readme

ROOT = pathlib.Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A fenced block, with the `<!-- not-run: reason -->` comment on the line
# before it when there is one.
BLOCK = re.compile(
    r"^(?:<!--\s*not-run:(?P<reason>[^\n]*?)-->\n)?"
    r"```(?P<language>\w*)\n(?P<body>.*?)^```",
    re.DOTALL | re.MULTILINE,
)
SHELLS = ("bash", "sh", "console")

# Commands of shell blocks that are neither run here nor annotated in the
# page, each with the reason.
_EXPLAIN = "tests/test_explain.py runs `kerastl explain` as a subprocess"
NOT_RUN = {
    "kerastl explain runs/pets photos/": _EXPLAIN,
    "kerastl explain model.keras cat.jpg dog.jpg --class Bengal "
    "--output-dir maps": _EXPLAIN,
    "kerastl explain runs/pets_vit photos/ --method rollout": _EXPLAIN,
}

# How long one command may take; the shared smoke run takes ~15 s.
TIMEOUT = 120
ONE_BACKEND = pytest.mark.backends(
    "torch",
    reason="the commands do not depend on the backend; run them once",
)


def _blocks(page):
    """`(line number, language, body, not-run reason or None)` per block."""
    text = page.read_text()
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("language")) + 1
        reason = match.group("reason")
        yield (
            line,
            match.group("language"),
            match.group("body"),
            None if reason is None else reason.strip(),
        )


def _page_id(page):
    return str(page.relative_to(ROOT))


def _pages_with(languages):
    return [
        pytest.param(page, id=_page_id(page))
        for page in PAGES
        if any(block[1] in languages for block in _blocks(page))
    ]


def test_not_run_blocks_say_why():
    annotated = 0
    for page in PAGES:
        text = page.read_text()
        # Every annotation is attached to a block (none left dangling).
        comments = len(re.findall(r"^<!--\s*not-run:", text, re.MULTILINE))
        # Every fence is part of a block this file reads.
        fences = len(re.findall(r"^```", text, re.MULTILINE))
        assert fences == 2 * len(list(_blocks(page))), _page_id(page)
        blocks = [b for b in _blocks(page) if b[3] is not None]
        assert comments == len(blocks), (
            f"{_page_id(page)}: a `<!-- not-run: ... -->` comment must be "
            "on the line right before its ``` fence"
        )
        for line, _, _, reason in blocks:
            assert reason, f"{_page_id(page)}:{line}: not-run without reason"
            annotated += 1
    assert annotated <= 8, "keep not-run blocks rare"


def test_readme_keeps_the_set_up_commands():
    text = (ROOT / "README.md").read_text()
    assert (
        'pip install -c constraints.txt -e ".[all]" && '
        "KERAS_BACKEND=jax kerastl fit recipes/pets.py"
    ) in text
    assert "pip install -c constraints.txt nox && nox" in text
    assert len(text.splitlines()) <= 250


LINK = re.compile(r"\]\(([^)#:]*)(?:#([^)]*))?\)")


def _anchors(page):
    """GitHub's anchors of a page's headings."""
    headings = re.findall(r"^#+ (.*)$", page.read_text(), re.MULTILINE)
    return {
        re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        for heading in headings
    }


def test_docs_links_resolve():
    for page in PAGES:
        for target, anchor in LINK.findall(page.read_text()):
            path = (page.parent / target).resolve() if target else page
            where = f"{_page_id(page)} links to {target}#{anchor}"
            assert path.exists(), where
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), where


# === Python blocks ===


@pytest.fixture(scope="module")
def fixture_namespace():
    """The names doc blocks use without defining them."""
    # Two batches of 32x32 images, 37 classes (as Oxford-IIIT Pets).
    images, labels = kit.color_images(32, num_classes=37)
    dataset = kit.ClassifierTestCase.dataset(images, labels, batch_size=16)
    rng = np.random.default_rng(0)
    return {
        "train_ds": dataset,
        "val_ds": dataset,
        "images": images,
        "labels": labels,
        "val_images": images,
        "val_labels": labels,
        # Multi-hot labels of 5 classes, each with positives and negatives.
        "val_tags": (rng.random((len(images), 5)) < 0.4).astype("int32"),
    }


def _with_stand_ins(code, tmp_path):
    """`code` with every built-in preset name replaced by a tiny local
    preset of the same family, 32x32 (the real ones are 224x224)."""
    from kerastl.models import catalog

    presets = set(catalog.image_presets())
    for name in sorted(set(re.findall(r"[\"'](\w+)[\"']", code)) & presets):
        family = catalog.preset_family(name).name
        assert family in kit.TINY_BACKBONES, (
            f"no tiny stand-in for {name!r} ({family}): use a "
            f"{'/'.join(kit.TINY_BACKBONES)} preset in the docs"
        )
        local = tmp_path / "presets" / family
        if not local.exists():
            kit.save_tiny_preset(family, local)
        code = re.sub(rf"([\"']){name}\1", repr(str(local)), code)
    return code


@pytest.mark.parametrize("page", _pages_with({"python"}))
def test_python_blocks_run(page, tmp_path, monkeypatch, fixture_namespace):
    monkeypatch.chdir(tmp_path)
    namespace = dict(fixture_namespace)
    ran = 0
    for line, language, body, reason in _blocks(page):
        if language != "python" or reason is not None:
            continue
        if page == test_readme.README and body == test_readme.quickstart_code():
            continue  # test_readme.py::test_python_quickstart runs it
        code = _with_stand_ins(body, tmp_path)
        # Line numbers of a traceback are the page's.
        code = "\n" * line + code
        exec(compile(code, str(page), "exec"), namespace)
        ran += 1
    assert ran


# === Shell blocks ===


def _shell_commands():
    """`(page, line, command)` for every command of every shell block that
    is not marked not-run: comments dropped, continuations joined."""
    for page in PAGES:
        for line, language, body, reason in _blocks(page):
            if language not in SHELLS or reason is not None:
                continue
            body = re.sub(r"\\\n", " ", body)
            for offset, command in enumerate(body.splitlines(), 1):
                command = command.removeprefix("$ ").split(" #")[0].strip()
                if command and not command.startswith("#"):
                    yield page, line + offset, command


def _kerastl_words(command):
    """The words after `kerastl`, and the environment set before it."""
    words = shlex.split(command)
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if words[:1] != ["kerastl"]:
        return None, env
    return words[1:], env


def _is_covered(words):
    """`kerastl fit recipes/NAME.py --smoke`: test_bundled_recipes.py runs
    every bundled recipe so, on every backend."""
    return (
        len(words) == 3
        and words[0] == "fit"
        and re.fullmatch(r"recipes/\w+\.py", words[1])
        and words[2] == "--smoke"
    )


def _is_quick(words):
    """Commands that run offline in seconds."""
    return (
        words in (["--help"], ["--version"], ["info"])
        or (words[:1] == ["presets"] and len(words) <= 2)
        or (len(words) == 2 and words[1] in ("--help", "-h"))
    )


def _is_evaluate_run_dir(words):
    return words == ["evaluate", "RUN_DIR"]


# Runs `kerastl` as its console script does, with sockets blocked as in the
# in-process tests (pytest-socket), so nothing is ever downloaded.
_OFFLINE_KERASTL = (
    "import sys, pytest_socket\n"
    "pytest_socket.disable_socket(allow_unix_socket=True)\n"
    "from kerastl.cli import cli\n"
    "sys.argv[0] = 'kerastl'\n"
    "cli()\n"
)


def _start(args, cwd, env):
    return subprocess.Popen(
        [sys.executable, "-c", _OFFLINE_KERASTL, *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process, command):
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"`{command}` took over {TIMEOUT} s:\n{output}")
    assert process.returncode == 0, f"`{command}` failed:\n{output}"
    return output


TINY_RECIPE = """\
from kerastl import Recipe
from kerastl import Stage
from kerastl.data import DataSpec

recipe = Recipe(
    name="docs",
    preset={preset!r},
    data=DataSpec("tfds", "cifar10"),
    batch_size=8,
    stages=(Stage(epochs=1, train="head"),),
)
"""


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """Starts every runnable command at once (they mostly wait on imports)
    and the shared smoke run; yields `{command: process}` and the run."""
    import keras

    root = tmp_path_factory.mktemp("docs-commands")
    env = {
        "KERAS_BACKEND": keras.config.backend(),
        "KERASTL_CACHE_DIR": str(root / "cache"),
    }
    kit.save_tiny_preset("resnet", root / "tiny_resnet")
    recipe = root / "docs_recipe.py"
    recipe.write_text(TINY_RECIPE.format(preset=str(root / "tiny_resnet")))
    run_dir = root / "run"
    smoke = _start(
        ["fit", str(recipe), "--smoke", "--output-dir", str(run_dir)],
        root,
        env,
    )
    started = {}
    for _, _, command in _shell_commands():
        words, extra = _kerastl_words(command)
        if words and _is_quick(words) and command not in started:
            started[command] = _start(words, ROOT, {**env, **extra})
    _finish(smoke, "kerastl fit (the shared smoke run) --smoke")
    yield started, run_dir, env
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@ONE_BACKEND
def test_shell_commands(commands):
    started, run_dir, env = commands
    ran = covered = 0
    for page, line, command in _shell_commands():
        where = f"{_page_id(page)}:{line}: `{command}`"
        words, extra = _kerastl_words(command)
        if command in NOT_RUN:
            assert NOT_RUN[command], f"{where}: NOT_RUN needs a reason"
        elif words is None:
            pytest.fail(
                f"{where} is not a kerastl command: put it in a block "
                "marked `<!-- not-run: reason -->`, or in NOT_RUN"
            )
        elif _is_covered(words):
            assert (ROOT / words[1]).is_file(), f"{where}: no such recipe"
            covered += 1
        elif _is_quick(words):
            output = _finish(started[command], command)
            assert output.strip(), f"{where} printed nothing"
            ran += 1
        elif _is_evaluate_run_dir(words):
            process = _start(["evaluate", str(run_dir)], ROOT, {**env, **extra})
            output = _finish(process, command)
            assert (run_dir / "evaluation_validation.md").exists(), output
            ran += 1
        else:
            pytest.fail(
                f"{where} is neither run nor covered by a test: mark its "
                "block `<!-- not-run: reason -->` or list it in NOT_RUN"
            )
    assert ran >= 5 and covered >= 1


# === Names of the code ===


def test_module_paths_in_the_docs_exist():
    """`kerastl.a.b` names and `kerastl/a/b.py` paths written in the docs
    exist, so a reorganisation of the package cannot leave them stale."""
    import importlib

    checked = 0
    for page in PAGES:
        text = page.read_text()
        for path in re.findall(r"(?<![\w./])kerastl/[\w/.]*\w", text):
            assert (ROOT / path).exists(), f"{_page_id(page)}: {path}"
            checked += 1
        for dotted in re.findall(r"(?<![\w/.\[-])kerastl(?:\.\w+)+", text):
            parts = dotted.split(".")
            if parts[-1] in ("json", "lock", "py", "md"):
                continue  # a file name: preset/kerastl.json
            module, attributes = parts, []
            while True:
                try:
                    value = importlib.import_module(".".join(module))
                    break
                except ModuleNotFoundError:
                    attributes.insert(0, module.pop())
            for attribute in attributes:
                assert hasattr(value, attribute), (
                    f"{_page_id(page)}: {dotted} does not exist"
                )
                value = getattr(value, attribute)
            checked += 1
    assert checked >= 10


def test_cli_page_names_every_command_and_option():
    import click

    from kerastl.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text()
    for name, command in cli.commands.items():
        assert f"## `kerastl {name}`" in text, f"docs/cli.md: no {name}"
        for param in command.params:
            if isinstance(param, click.Option):
                option = max(param.opts, key=len)
                assert option in text, f"docs/cli.md: kerastl {name} {option}"
    for param in cli.params:
        assert max(param.opts, key=len) in text


def test_every_field_is_documented():
    import dataclasses

    import kerastl
    from kerastl.data import Augment
    from kerastl.data import DataSpec

    pages = {
        kerastl.Recipe: "recipes.md",
        kerastl.Stage: "recipes.md",
        Augment: "recipes.md",
        DataSpec: "data.md",
    }
    for cls, page in pages.items():
        text = (ROOT / "docs" / page).read_text()
        for field in dataclasses.fields(cls):
            assert f"`{field.name}`" in text, (
                f"docs/{page}: {cls.__name__}.{field.name} is not documented"
            )
