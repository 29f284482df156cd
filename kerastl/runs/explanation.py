"""`kerastl explain`: saliency maps of image files, as PNG grids.

Each image is read as `kerastl predict` reads it (decoded, center-cropped,
resized to the model's input), predicted, and explained: Grad-CAM of the
predicted class (multi-label: of each class over its threshold) or of the
class asked for, or attention rollout (by default for ViT, DeiT and
DINOv2, whose Grad-CAM maps are weak). The maps are drawn over the images,
16 images to a page, each image with its maps below it, and listed in
`explanations.json`.

Output: a new folder, never one kerastl did not create: by default
`<run>/explanations/<timestamp>` for a run directory and
`runs/<model name>/explanations/<timestamp>` for a `.keras` file or a
preset; it must lie outside the folders of the images explained.
"""

import dataclasses
import difflib
import json
import pathlib

import numpy as np

from kerastl.deploy import predict
from kerastl.evaluate import drawing
from kerastl.evaluate import explain
from kerastl.runs import rundir
from kerastl.utils import atomic

RESULT_FILE = "explanations.json"
EXPLANATIONS_DIR = "explanations"
IMAGES_PER_PAGE = 16
METHOD_NAMES = {"gradcam": "Grad-CAM", "rollout": "attention rollout"}


@dataclasses.dataclass
class Explanation:
    """What `explain_files` wrote.

    Attributes:
        output_dir: `pathlib.Path` of the folder.
        pages: list of the PNG grids' paths.
        results: list of dicts, one per file, as in `explanations.json`:
            `path`, and `error` for an unreadable file, else `true` (the
            class its folder names, or `None`), `predictions` (top 5) and
            `maps` (`class`, `probability`, `peak`: `[row, column]` of the
            map's maximum in the model's input pixels, `page`).
        method: str. The method used: `"gradcam"` or `"rollout"`.
    """

    output_dir: pathlib.Path
    pages: list
    results: list
    method: str

    @property
    def summary(self):
        """One line per page, and the unreadable files."""
        explained = sum("maps" in result for result in self.results)
        lines = [
            f"Explained {explained} image(s) with "
            f"{METHOD_NAMES[self.method]} in {self.output_dir}:"
        ]
        lines += [f"  {page}" for page in self.pages]
        lines += [
            f"  skipped {result['path']}: {result['error']}"
            for result in self.results
            if "error" in result
        ]
        return "\n".join(lines)


def explain_files(
    model_path,
    inputs,
    *,
    method="auto",
    class_name=None,
    output_dir=None,
    print_fn=print,
):
    """Explains image files with a trained classifier; writes PNG grids.

    Args:
        model_path: a run directory (or a folder of runs: the newest), a
            `.keras` file or a preset written by `save_to_preset`.
        inputs: image files and folders.
        method: `"auto"`, `"gradcam"` or `"rollout"` (ViT, DeiT,
            DINOv2). `"auto"`: Grad-CAM for `class_name`, else
            `kerastl.explain.default_method` (rollout for ViT, DeiT and
            DINOv2, Grad-CAM for the rest).
        class_name: str or `None`. Grad-CAM of this class for every image;
            `None` explains what the model predicted.
        output_dir: path or `None`. A new or empty folder; `None` for the
            default (see the module's docstring).
        print_fn: callable for the summary and progress lines.

    Returns:
        An `Explanation`.

    Example:
    ```python
    from kerastl.runs import explanation

    result = explanation.explain_files("runs/pets", ["photos/"])
    result.pages  # [PosixPath('runs/pets/.../explanations_001.png')]
    ```
    """
    if method not in explain.METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(explain.METHODS)}. "
            f"Received: method={method!r}"
        )
    if method == "rollout" and class_name is not None:
        raise ValueError(
            "Attention rollout does not depend on the class, so it takes no "
            "--class. Use --method gradcam to see the evidence for one class. "
            f"Received: class_name={class_name!r}"
        )
    # Where the maps go is settled before any work, and written only once
    # there is something to write.
    target = _output_parent(model_path, output_dir, inputs)
    if output_dir is not None:
        rundir.check_output_dir(target)
    model = rundir.load_classifier(model_path)
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    forced = None if class_name is None else _class_index(class_name, names)
    if method == "auto":
        method = (
            "gradcam" if forced is not None else explain.default_method(model)
        )
    if method == "rollout":
        # Before reading any image: a convnet cannot be rolled out.
        explain.attention_layers(model)
    results, pixels = predict.read_inputs(model, inputs)
    if not pixels:
        raise ValueError(
            f"None of the {len(results)} file(s) given is a readable image "
            f"(first: {results[0]['path'] if results else 'none'}: "
            f"{results[0].get('error', 'no files') if results else ''}). "
            "Pass image files or folders of images."
        )
    lock = (
        rundir.new_run_dir(target)
        if output_dir is None
        else rundir.claim(target)
    )
    with lock:
        readable = [result for result in results if "error" not in result]
        pixels = np.stack(pixels)
        probs = np.concatenate(
            [
                predict.predict_probabilities(model, pixels[i : i + 32])
                for i in range(0, len(pixels), 32)
            ]
        )
        if method == "rollout":
            classes = [[None] for _ in readable]
        elif forced is not None:
            classes = [[forced] for _ in readable]
        else:
            classes = explain.classes_to_explain(model, probs)
        maps = _maps(model, pixels, classes, method, print_fn)
        for result, row, chosen, image_maps in zip(
            readable, probs, classes, maps, strict=True
        ):
            result["true"] = _folder_class(result["path"], names)
            order = np.argsort(-row, kind="stable")[:5]
            result["predictions"] = [
                {"class": names[i], "probability": float(row[i])} for i in order
            ]
            result["maps"] = [
                {
                    "class": None if c is None else names[c],
                    "probability": None if c is None else float(row[c]),
                    "peak": _peak(heatmap),
                }
                for c, heatmap in zip(chosen, image_maps, strict=True)
            ]
        pages = _draw_pages(
            lock.run_dir, readable, pixels, maps, method, print_fn
        )
        atomic.write_text(
            lock.run_dir / RESULT_FILE,
            json.dumps(
                {"model": str(model_path), "method": method, "images": results},
                indent=2,
                ensure_ascii=False,
            )
            + "\n",
        )
    explanation = Explanation(lock.run_dir, pages, results, method)
    print_fn(explanation.summary)
    return explanation


def _maps(model, pixels, classes, method, print_fn):
    """The heatmaps, one list per image, in the order of `classes`."""
    rows = [row for row, chosen in enumerate(classes) for _ in chosen]
    flat = [c for chosen in classes for c in chosen]
    heatmaps = []
    step = explain.BATCH_SIZE * 4
    for start in range(0, len(rows), step):
        index = rows[start : start + step]
        if method == "rollout":
            heatmaps.append(explain.rollout(model, pixels[index]))
        else:
            heatmaps.append(
                explain.gradcam(
                    model,
                    pixels[index],
                    class_index=np.array(flat[start : start + step], int),
                )
            )
        if len(rows) > step:
            done = min(start + step, len(rows))
            print_fn(f"explained {done}/{len(rows)} maps")
    heatmaps = np.concatenate(heatmaps)
    per_image = [[] for _ in classes]
    for row, heatmap in zip(rows, heatmaps, strict=True):
        per_image[row].append(heatmap)
    return per_image


def _draw_pages(output_dir, readable, pixels, maps, method, print_fn):
    pages = []
    label = METHOD_NAMES[method]
    for first in range(0, len(readable), IMAGES_PER_PAGE):
        number = first // IMAGES_PER_PAGE + 1
        stacks = []
        for index in range(first, min(first + IMAGES_PER_PAGE, len(readable))):
            result = readable[index]
            for item in result["maps"]:
                item["page"] = number
            stacks.append(
                [(pixels[index], _image_caption(result))]
                + [
                    (
                        drawing.overlay(pixels[index], heatmap),
                        _map_caption(item),
                    )
                    for heatmap, item in zip(
                        maps[index], result["maps"], strict=True
                    )
                ]
            )
        pages.append(
            drawing.stacked_grid(
                stacks,
                output_dir / f"explanations_{number:03d}.png",
                f"{label}: what the model looks at (page {number})",
            )
        )
    return pages


def _peak(heatmap):
    """`[row, column]` of the map's maximum, in model-input pixels."""
    row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return [int(row), int(column)]


def _image_caption(result):
    top = result["predictions"][0]
    lines = [
        _shorten(pathlib.Path(result["path"]).name),
        f"pred: {_shorten(top['class'])} ({top['probability']:.2f})",
    ]
    if result["true"] is not None:
        lines.append(f"true: {_shorten(result['true'])}")
    return "\n".join(lines)


def _map_caption(item):
    if item["class"] is None:
        return "attention rollout"
    return f"{_shorten(item['class'])} ({item['probability']:.2f})"


def _shorten(text, limit=28):
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _folder_class(path, names):
    """The class the image's folder names, as in a folder dataset."""
    folder = pathlib.Path(path).parent.name
    return folder if folder in names else None


def _class_index(class_name, names):
    if class_name in names:
        return names.index(class_name)
    close = difflib.get_close_matches(class_name, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise ValueError(
        f"The model has no class {class_name!r}.{hint} Its classes are: "
        f"{shown}. Received: class_name={class_name!r}"
    )


def _output_parent(model_path, output_dir, inputs):
    """The folder to create (`output_dir`, or the parent of a timestamped
    one), checked to lie outside every folder of images given."""
    if output_dir is None:
        source = pathlib.Path(rundir.model_source(model_path))
        run = source.parent if source.name == rundir.MODEL_FILE else None
        if run is not None and rundir.is_run(run):
            target = run / EXPLANATIONS_DIR
        else:
            name = source.stem if source.suffix == ".keras" else source.name
            target = rundir.default_parent(name) / EXPLANATIONS_DIR
    else:
        target = pathlib.Path(output_dir)
    for folder in map(pathlib.Path, inputs):
        # A folder of images may be a dataset, read again later: maps
        # written inside it would pass for its images.
        if folder.is_dir():
            rundir.check_outside(target, folder, "the images explained")
    return target
