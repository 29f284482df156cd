"""Predicting image files with a trained classifier (`kerastl predict`)."""

import pathlib

import keras
import numpy as np

from kerastl import presets
from kerastl.classifier import TransferClassifier
from kerastl.data import images
from kerastl.data import pipeline

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif")


def load_model(path):
    """A classifier from a run directory, a `.keras` file or a preset.

    Args:
        path: str or path-like.

    Example:
    ```python
    model = kerastl.prediction.load_model("runs/pets/20261123-140512")
    ```
    """
    path = pathlib.Path(path)
    if path.is_dir() and (path / "model.keras").is_file():
        return keras.models.load_model(path / "model.keras")
    if path.is_dir() and (path / presets.HEAD_CONFIG_FILE).is_file():
        return TransferClassifier.from_preset(path)
    if path.suffix == ".keras" and path.is_file():
        return keras.models.load_model(path)
    raise ValueError(
        f"'{path}' is not a kerastl model: pass a run directory (holding "
        "model.keras), a .keras file, or a preset directory written by "
        f"save_to_preset. Received: {path}"
    )


def expand_inputs(inputs):
    """Image files named directly, plus the image files inside folders."""
    files = []
    for item in map(pathlib.Path, inputs):
        if item.is_dir():
            files += sorted(
                p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            files.append(item)
    return files


def predict_files(model, inputs, top_k=5, batch_size=32):
    """Top-k classes and probabilities for each image file.

    Unreadable files get an `error` entry instead; the others are still
    predicted. Multi-label models report every class's probability sorted,
    cut to `top_k`.

    Args:
        model: a `kerastl.TransferClassifier`.
        inputs: image files and folders.
        top_k: int. Classes per image.
        batch_size: int.

    Returns:
        A list of dicts, one per file, in input order: `path` and either
        `predictions` (`class`, `probability`) or `error`.

    Example:
    ```python
    kerastl.prediction.predict_files(model, ["cat.jpg"], top_k=3)
    ```
    """
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    results, batch, slots = [], [], []
    for path in expand_inputs(inputs):
        results.append({"path": str(path)})
        try:
            pixels = images.read_rgb(str(path))
        except Exception:
            reason = images.check_file(str(path)) or "unreadable"
            results[-1]["error"] = reason
            continue
        # The same decoding and resizing as training and evaluation.
        resized = pipeline.center_crop_resize(pixels, model.image_size)
        batch.append(np.asarray(resized))
        slots.append(results[-1])
    for start in range(0, len(batch), batch_size):
        probs = np.asarray(
            model.predict_on_batch(np.stack(batch[start : start + batch_size]))
        )
        for slot, row in zip(
            slots[start : start + batch_size], probs, strict=True
        ):
            order = np.argsort(row)[::-1][:top_k]
            slot["predictions"] = [
                {"class": names[i], "probability": float(row[i])} for i in order
            ]
    return results
