"""How kerastl draws and writes a figure: resolution, literal text, colours.

Figures are built on `matplotlib.figure.Figure`, never pyplot: no display
and no global figure state, so plotting is safe from any thread and leaks
nothing between calls.
"""

import math
import pathlib
import warnings

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from kerastl.utils import atomic

DPI = 100


# PNG sides are kept below this many inches (100 dpi) so a figure for
# thousands of classes stays a file a browser opens.
MAX_INCHES = 60.0


# Text properties for user-given strings (class, stage and run names):
# matplotlib would read `$...$` as mathtext, which renders `$x_1$` as a
# formula and raises on a name such as `$x_$`, and a matplotlibrc with
# `text.usetex` would send `_` to LaTeX.
LITERAL = {"parse_math": False, "usetex": False}


def save(figure, path):
    """Writes `figure` as a PNG at `path`, atomically; returns the path.

    Example:
    ```python
    kerastl.evaluate.drawing.save(figure, "plots/curves.png")
    ```
    """
    path = pathlib.Path(path)
    with atomic.atomic_path(path) as tmp, warnings.catch_warnings():
        # A class or file name in a script the font lacks (an emoji) is
        # drawn as a box; matplotlib's warning would only clutter the
        # console of a run that is otherwise fine.
        warnings.filterwarnings("ignore", "Glyph .* missing from font")
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


def colors(count):
    """`count` colours distinct to the eye: tab10, tab20, then viridis.

    Example:
    ```python
    kerastl.evaluate.drawing.colors(3)
    ```
    """
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["viridis"](i / (count - 1)) for i in range(count)]


def image_grid(images, captions, path, title, columns=None):
    """Draws images in a grid, each with a caption; returns the path.

    Args:
        images: list of arrays `(height, width, 3)` or `(height, width, 1)`,
            uint8 or float in [0, 255]; `None` leaves a cell blank.
        captions: list of str, one per image; drawn as typed (long ones
            should contain line breaks).
        path: str or path-like. Where to write the PNG.
        title: str. The figure's title.
        columns: int or `None`. Images per row; `None` makes the grid
            about square.

    Example:
    ```python
    kerastl.evaluate.drawing.image_grid(
        [cat, dog], ["cat.jpg", "dog.jpg"], "grid.png", "Two pets"
    )
    ```
    """
    count = max(1, len(images))
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    figure = Figure(
        figsize=(2.6 * columns, 2.8 * rows + 0.4), layout="constrained"
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    # The grid may have more cells than images; the spare ones stay blank.
    for ax, image, caption in zip(axes, images, captions, strict=False):
        if image is None:
            continue
        image = np.clip(np.asarray(image, dtype=np.float32), 0, 255) / 255.0
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim == 2:
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(image)
        ax.set_title(caption, fontsize=8, **LITERAL)
    figure.suptitle(title, **LITERAL)
    return save(figure, path)


def stacked_grid(stacks, path, title, columns=None):
    """Draws stacks of captioned images: each stack top to bottom, the
    stacks left to right in bands; returns the path.

    A stack is an image and what belongs under it (its heatmaps, say), so
    each image's own row of maps sits right below it.

    Args:
        stacks: list of lists of `(image, caption)`; images as in
            `image_grid`. Shorter stacks leave blank cells below them.
        path: str or path-like. Where to write the PNG.
        title: str. The figure's title.
        columns: int or `None`. Stacks per band; `None` makes the figure
            about square.

    Example:
    ```python
    kerastl.evaluate.drawing.stacked_grid(
        [[(cat, "cat.jpg"), (cat_map, "Grad-CAM: cat")]], "x.png", "Maps"
    )
    ```
    """
    count = max(1, len(stacks))
    depth = max([len(stack) for stack in stacks] + [1])
    columns = columns or min(count, math.ceil(math.sqrt(count * depth)))
    cells = []
    for band in range(0, count, columns):
        for level in range(depth):
            for stack in stacks[band : band + columns]:
                cells.append(stack[level] if level < len(stack) else None)
            # A last band with fewer stacks is padded to the full width.
            cells += [None] * (columns - len(stacks[band : band + columns]))
    return image_grid(
        [cell[0] if cell else None for cell in cells],
        [cell[1] if cell else "" for cell in cells],
        path,
        title,
        columns=columns,
    )


def overlay(image, heatmap, alpha=0.5):
    """An image with a heatmap blended over it in jet colours.

    Args:
        image: `(height, width, 3)` or `(height, width, 1)`, in [0, 255].
        heatmap: `(height, width)` in [0, 1] (`kerastl.explain`'s maps).
        alpha: float. The heatmap's weight. Defaults to `0.5`.

    Returns:
        float32 `(height, width, 3)` in [0, 255].

    Example:
    ```python
    blended = kerastl.evaluate.drawing.overlay(image, heatmaps[0])
    ```
    """
    image = np.clip(np.asarray(image, dtype=np.float32), 0, 255)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    heat = colormaps["jet"](np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
    return ((1 - alpha) * image + alpha * heat).astype(np.float32)
