"""What `kerastl select` and `kerastl doctor` share: the data they inspect,
the backbone features of every image, and the folder they write.

Both take a recipe or a bare folder or CSV of images, load every split in
source order (nothing shuffled or augmented), and pass each image through
a frozen backbone once, through the feature cache: a second `select`, a
`doctor` on the same preset, or a later `kerastl fit` whose head trains on
cached features reuses them instead of running the backbone again.
"""

import dataclasses
import pathlib
import re
import time

import keras
import numpy as np

from kerastl.data import DataSpec
from kerastl.data import images as image_io
from kerastl.runs import build
from kerastl.runs import recipe as recipes
from kerastl.runs import rundir
from kerastl.runs.fit import data_folder
from kerastl.runs.recipe import Recipe
from kerastl.train.features import FeatureCache


@dataclasses.dataclass
class Inspected:
    """One preset's view of a dataset: the model, the data and features.

    Args:
        recipe: the `kerastl.Recipe` used (its preset a stand-in in smoke
            mode).
        model: the `kerastl.TransferClassifier` whose backbone made the
            features (its head is new and unused).
        bundle: the ordered `kerastl.data.DataBundle`.
        features: dict. Split name to `CachedFeatures`, in the order of
            `bundle.splits[split]`.
        seconds: dict. Split name to the seconds its feature pass took.

    Example:
    ```python
    seen = kerastl.runs.inspection.inspect(recipe)
    seen.features["train"].features.shape  # (N, feature width)
    ```
    """

    recipe: Recipe
    model: object
    bundle: object
    features: dict
    seconds: dict

    def labels(self, split):
        """The labels of `split`, in feature order."""
        return self.features[split].labels

    def example_names(self, split):
        """What to call each example of `split`: its file, or
        `split[index]` for arrays and tfds."""
        examples = (self.bundle.examples or {}).get(split)
        if examples is not None and examples.paths is not None:
            return list(examples.paths)
        return [f"{split}[{i}]" for i in range(len(self.labels(split)))]


def recipe_for(source, preset=None, multi_label=False):
    """The recipe `select` or `doctor` inspects `source` with.

    Args:
        source: a `kerastl.Recipe`, or a path: a recipe file (`.py`), a
            folder of class subfolders, or a CSV of `path,labels` rows (see
            `kerastl.data.DataSpec`).
        preset: str or `None`. Replaces the recipe's preset; required for
            a folder or CSV.
        multi_label: bool. For a folder or CSV: several labels per image.

    Returns:
        A `kerastl.Recipe`.

    Example:
    ```python
    recipe = kerastl.runs.inspection.recipe_for("data/flowers",
                                                "resnet_50_imagenet")
    ```
    """
    if isinstance(source, Recipe) or str(source).endswith(".py"):
        recipe = (
            source
            if isinstance(source, Recipe)
            else recipes.load_recipe(source)
        )
        if preset is not None:
            recipe = dataclasses.replace(recipe, preset=str(preset))
        return recipe
    path = pathlib.Path(source)
    if path.is_dir() or path.suffix.lower() == ".csv":
        if preset is None:
            raise ValueError(
                f"{source} is data, not a recipe, so it names no preset. "
                "Pass the backbone to use, e.g. --preset resnet_50_imagenet."
            )
        kind = "folder" if path.is_dir() else "csv"
        return Recipe(
            name=_name_of(path),
            preset=str(preset),
            data=DataSpec(kind, str(path)),
            multi_label=multi_label,
        )
    raise ValueError(
        f"{source} is neither a recipe (.py), a folder of class subfolders "
        "nor a CSV file of labelled images. Check the path."
    )


def _name_of(path):
    """A folder name under runs/ for a data folder or CSV file."""
    return re.sub(r"[^\w.-]+", "_", path.resolve().stem).strip("_") or "data"


def inspect(
    recipe, *, splits=None, smoke=False, verbose="auto", print_fn=print
):
    """Loads the recipe's data in order and computes every image's features.

    The preset's backbone (with the recipe's pooling) turns each image of
    each split into one feature vector, through the feature cache.

    Args:
        recipe: a `kerastl.Recipe`.
        splits: list of str or `None`. The splits to compute features of;
            `None` for all.
        smoke: bool. The recipe's data in smoke mode, and a stand-in for a
            preset that cannot load offline (see `kerastl fit --smoke`).
        verbose: `"auto"`, 0 or 1: progress bars of the feature passes.
        print_fn: callable for console lines.

    Returns:
        An `Inspected`.

    Example:
    ```python
    seen = kerastl.runs.inspection.inspect(recipe)
    ```
    """
    keras.utils.set_random_seed(recipe.seed)
    if smoke:
        recipe, converter = build.smoke_preset(recipe, print_fn)
    else:
        converter = build.load_converter(recipe)
    bundle = build.load_recipe_data(
        recipe, converter.image_size, smoke=smoke, ordered=True
    )
    model = build.build_model(recipe, bundle.class_names, converter)
    cache = FeatureCache(model, None)
    features, seconds = {}, {}
    for split, dataset in bundle.splits.items():
        if splits is not None and split not in splits:
            continue
        start = time.perf_counter()
        features[split] = cache.read(
            dataset, name=split, verbose=verbose, print_fn=print_fn
        )
        seconds[split] = time.perf_counter() - start
    cache.report_damage(print_fn)
    return Inspected(recipe, model, bundle, features, seconds)


def images_at(dataset, indices):
    """The model-ready images at `indices` of an ordered batched dataset.

    One pass over `dataset`, keeping only the wanted images: for the
    thumbnails of a report, without holding every image in memory.

    Args:
        dataset: a batched `(images, labels)` dataset, in a fixed order.
        indices: iterable of int.

    Returns:
        dict. Index to a uint8 `(H, W, 3)` array.

    Example:
    ```python
    thumbs = kerastl.runs.inspection.images_at(bundle.splits["train"],
                                               [0, 7])
    ```
    """
    wanted = set(int(i) for i in indices)
    found = {}
    start = 0
    for images, _ in dataset:
        batch = np.asarray(images)
        for offset in range(len(batch)):
            if start + offset in wanted:
                found[start + offset] = np.clip(batch[offset], 0, 255).astype(
                    np.uint8
                )
        start += len(batch)
        if len(found) == len(wanted):
            break
    return found


def claim_output(recipe, output_dir, kind):
    """Creates and locks the folder a `select` or `doctor` run writes.

    `output_dir`, if given, must be new or empty (as `fit --output-dir`);
    otherwise `runs/<recipe name>/<kind>/<timestamp>` is made. Either
    way it must lie outside the data, which kerastl only reads.

    Args:
        recipe: the `kerastl.Recipe` inspected.
        output_dir: path or `None`.
        kind: str. `"select"` or `"doctor"`.

    Returns:
        A held `kerastl.runs.locking.RunLock`; its `run_dir` is the folder.

    Example:
    ```python
    with kerastl.runs.inspection.claim_output(recipe, None, "doctor") as lock:
        ...
    ```
    """
    if output_dir is None:
        parent = rundir.default_parent(recipe.name) / kind
        rundir.check_outside(parent, data_folder(recipe.data), "the data")
        return rundir.new_run_dir(parent)
    rundir.check_outside(output_dir, data_folder(recipe.data), "the data")
    return rundir.claim(output_dir)


def source_sizes(inspected, split):
    """`(heights, widths, grayscale)` of `split`'s source images, or `None`.

    Read from file headers (no decoding) or array shapes; `None` for a
    tfds split, whose images exist only inside its dataset.

    Args:
        inspected: an `Inspected`.
        split: str.

    Example:
    ```python
    heights, widths, gray = kerastl.runs.inspection.source_sizes(seen,
                                                                 "train")
    ```
    """
    examples = (inspected.bundle.examples or {}).get(split)
    if examples is None:
        return None
    if examples.paths is None:
        count, height, width = examples.images.shape[:3]
        channels = examples.images.shape[3] if examples.images.ndim == 4 else 1
        gray = np.full(count, channels == 1)
        return np.full(count, height), np.full(count, width), gray
    facts = [image_io.header(path) for path in examples.paths]
    heights = np.array([fact.height for fact in facts])
    widths = np.array([fact.width for fact in facts])
    gray = np.array([fact.grayscale for fact in facts])
    return heights, widths, gray
