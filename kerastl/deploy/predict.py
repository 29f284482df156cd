"""Predicting image files with a trained classifier (`kerastl predict`)."""

import csv
import io
import pathlib

import numpy as np

from kerastl.data import images
from kerastl.data import pipeline
from kerastl.data.folder_source import list_files
from kerastl.models import decisions


def expand_inputs(inputs):
    """Files named directly, plus every visible file inside folders.

    Folders are listed as the folder data source lists a class folder
    (`kerastl.data.folder_source.list_files`): every file whatever its name or
    kind, so a file that is not a readable image gets its reason in the
    results instead of being left out.

    Args:
        inputs: files and folders, str or path-like.

    Returns:
        A list of str, folders' files sorted, in input order.

    Example:
    ```python
    kerastl.deploy.predict.expand_inputs(["cat.jpg", "new_photos/"])
    ```
    """
    files = []
    for item in map(pathlib.Path, inputs):
        if item.is_dir():
            files += list_files(item)
        else:
            files.append(str(item))
    return files


def predict_files(
    model,
    inputs,
    top_k=5,
    batch_size=32,
    tta=False,
    max_pixels=images.MAX_PIXELS,
):
    """Top-k classes and probabilities for each image file.

    Files that are not readable images (not an image, corrupt, a named
    pipe, over `max_pixels`, ...) get an `error` entry with the reason
    instead; the others are still predicted, decoded and resized as
    evaluation does. Multi-label models also list `labels`: every class
    whose probability reaches its threshold (the model's tuned
    `thresholds`, else 0.5), most probable first.

    Test-time augmentation (`tta=True`) averages the probabilities of each
    image and its horizontal mirror: usually a little more accurate, at
    twice the cost. Only the mirror, because every recipe trains with
    flips; crops would change what the model sees at the borders.

    Args:
        model: a `kerastl.TransferClassifier`.
        inputs: image files and folders.
        top_k: int. Classes per image.
        batch_size: int.
        tta: bool. Average with the mirrored image. Defaults to `False`.
        max_pixels: int. Larger images are refused before decoding.
            Defaults to `images.MAX_PIXELS` (50 million).

    Returns:
        A list of dicts, one per file, in input order: `path` and either
        `predictions` (`class`, `probability`; plus `labels` for a
        multi-label model) or `error`.

    Example:
    ```python
    kerastl.deploy.predict.predict_files(model, ["cat.jpg"], top_k=3)
    ```
    """
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    results, batch = read_inputs(model, inputs, max_pixels)
    slots = [result for result in results if "error" not in result]
    cuts = model.thresholds or [decisions.DEFAULT_THRESHOLD] * len(names)
    for start in range(0, len(batch), batch_size):
        chunk = np.stack(batch[start : start + batch_size])
        probs = predict_probabilities(model, chunk, tta=tta)
        for slot, row in zip(
            slots[start : start + batch_size], probs, strict=True
        ):
            order = np.argsort(row)[::-1]
            slot["predictions"] = [
                {"class": names[i], "probability": float(row[i])}
                for i in order[:top_k]
            ]
            if model.multi_label:
                slot["labels"] = [
                    {
                        "class": names[i],
                        "probability": float(row[i]),
                        "threshold": cuts[i],
                    }
                    for i in order
                    if row[i] >= cuts[i]
                ]
    return results


def read_inputs(model, inputs, max_pixels=images.MAX_PIXELS):
    """Reads image files and folders as the model sees them.

    Each readable image is decoded, center-cropped and resized to the
    model's input size exactly as evaluation does; each unreadable file
    gets the reason instead.

    Args:
        model: a `kerastl.TransferClassifier`.
        inputs: image files and folders (see `expand_inputs`).
        max_pixels: int. Larger images are refused before decoding.

    Returns:
        `(results, images)`: one dict per file in input order, `path` and,
        for an unreadable file, `error`; and a list of float32 `(height,
        width, 3)` arrays, one per readable file, in the same order.

    Example:
    ```python
    results, pixels = kerastl.deploy.predict.read_inputs(model, ["cats/"])
    ```
    """
    min_size = pipeline.decode_size(model.image_size)
    results, batch = [], []
    for path in expand_inputs(inputs):
        results.append({"path": path})
        try:
            pixels = images.read_rgb(path, min_size, max_pixels)
        except images.UnreadableImageError as e:
            results[-1]["error"] = e.reason
            continue
        # The same decoding and resizing as evaluation.
        resized = pipeline.center_crop_resize(pixels, model.image_size)
        batch.append(np.asarray(resized))
    return results, batch


def predict_probabilities(model, images_batch, tta=False):
    """The model's probabilities for a batch, optionally flip-averaged.

    Args:
        model: a `kerastl.TransferClassifier`.
        images_batch: `(n, height, width, 3)` images at the model's size.
        tta: bool. Average with the horizontally mirrored images.

    Example:
    ```python
    probs = kerastl.deploy.predict.predict_probabilities(model, x, tta=True)
    ```
    """
    probs = np.asarray(model.predict_on_batch(images_batch), np.float64)
    if tta:
        mirrored = np.ascontiguousarray(images_batch[:, :, ::-1])
        probs = (
            probs + np.asarray(model.predict_on_batch(mirrored), np.float64)
        ) / 2
    return probs


def as_csv(results):
    """`predict_files` results as CSV text: one row per (image, class).

    Columns `path`, `rank`, `class`, `probability`, `selected` (multi-label:
    1 when over the threshold; multi-class: 1 for the top class) and
    `error` (unreadable files get one row with it).

    Example:
    ```python
    print(kerastl.deploy.predict.as_csv(results))
    ```
    """
    out = io.StringIO()
    fields = ["path", "rank", "class", "probability", "selected", "error"]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for result in results:
        if "error" in result:
            writer.writerow({"path": result["path"], "error": result["error"]})
            continue
        chosen = {
            label["class"]
            for label in result.get("labels", result["predictions"][:1])
        }
        for rank, item in enumerate(result["predictions"], start=1):
            writer.writerow(
                {
                    "path": result["path"],
                    "rank": rank,
                    "class": item["class"],
                    "probability": f"{item['probability']:.6f}",
                    "selected": int(item["class"] in chosen),
                }
            )
    return out.getvalue()
