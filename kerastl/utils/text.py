"""Plain-text layout for the console: aligned columns.

Imports nothing heavy, so the CLI can use it before Keras is imported.
"""


def columns(rows, indent=""):
    """Rows of strings as left-aligned columns; the last is not padded.

    Args:
        rows: list of equal-length sequences of str; the first is usually
            the header.
        indent: str put before every line.

    Example:
    ```python
    print(kerastl.utils.text.columns([("preset", "input"), ("vit", "224x224")]))
    ```
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        indent
        + "  ".join(
            [
                cell.ljust(w)
                for cell, w in zip(row[:-1], widths[:-1], strict=True)
            ]
            + [row[-1]]
        ).rstrip()
        for row in rows
    )
