"""How kerastl draws and writes a figure: resolution, literal text, colours.

Figures are built on `matplotlib.figure.Figure`, never pyplot: no display
and no global figure state, so plotting is safe from any thread and leaks
nothing between calls.
"""

import pathlib

from matplotlib import colormaps

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
    with atomic.atomic_path(path) as tmp:
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
