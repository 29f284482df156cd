"""Freezing and unfreezing a classifier's backbone by layer group.

Keras' transfer-learning rules are encoded here rather than left to folklore:

- A frozen BatchNormalization layer runs in inference mode: Keras uses the
  moving statistics whenever `layer.trainable` is False. Unfreezing a group
  keeps its BatchNorm layers frozen unless `train_bn=True`, because batch
  statistics of small fine-tuning batches wreck pretrained features.
- A change of `trainable` only takes effect after `compile()`. The classifier
  methods that call these functions recompile; see
  `TransferClassifier.freeze_backbone`.
"""

import dataclasses

import keras

from kerastl.models.grouping import count_params
from kerastl.utils import keras_internals


def _batchnorm_layers(layers):
    return [
        sub
        for layer in layers
        for sub in keras_internals.all_layers(layer)
        if isinstance(sub, keras.layers.BatchNormalization)
    ]


def set_backbone_trainable(backbone, groups, last_n, train_bn=False):
    """Makes the last `last_n` groups of a backbone trainable, the rest frozen.

    Args:
        backbone: the `keras_hub.models.Backbone` that `groups` split.
        groups: list of `kerastl.models.grouping.LayerGroup`, input to output.
        last_n: int. How many groups, counted from the output, train. `0`
            freezes the whole backbone.
        train_bn: bool. Whether BatchNorm layers in the trained groups train
            too (batch statistics and affine weights). Defaults to `False`:
            they stay in inference mode.

    Example:
    ```python
    groups = kerastl.models.grouping.layer_groups(backbone)
    kerastl.models.freezing.set_backbone_trainable(backbone, groups, last_n=1)
    ```
    """
    if not 0 <= last_n <= len(groups):
        names = ", ".join(group.name for group in groups)
        raise ValueError(
            f"`last_n` must be between 0 and {len(groups)}, the number of "
            f"layer groups of this backbone ({names}). "
            f"Received: last_n={last_n}"
        )
    # Setting `trainable` on the backbone resets every sublayer, so the state
    # is rebuilt from scratch each time and never depends on the last call.
    backbone.trainable = last_n > 0
    first_trained = len(groups) - last_n
    for index, group in enumerate(groups):
        for layer in group.layers:
            layer.trainable = index >= first_trained
        if not train_bn:
            for layer in _batchnorm_layers(group.layers):
                layer.trainable = False


@dataclasses.dataclass(frozen=True)
class GroupAudit:
    """Trainable state of one layer group.

    Args:
        name: str. The group's name (`"head"` for the classifier head).
        trainable_params: int. Parameters the optimizer updates.
        frozen_params: int. Parameters it does not update, BatchNorm moving
            statistics included.
        batchnorm: str. `"inference"` when every BatchNorm layer of the group
            uses its moving statistics, `"train"` when every one uses batch
            statistics, `"mixed"`, or `"-"` when the group has none.

    Example:
    ```python
    audit = kerastl.models.freezing.trainable_audit(model)
    audit[-1].name  # "head"
    ```
    """

    name: str
    trainable_params: int
    frozen_params: int
    batchnorm: str


def _audit(name, layers):
    weights = {id(w): w for layer in layers for w in layer.weights}.values()
    trainable = count_params([w for w in weights if w.trainable])
    frozen = count_params([w for w in weights if not w.trainable])
    bn = _batchnorm_layers(layers)
    if not bn:
        mode = "-"
    elif all(layer.trainable for layer in bn):
        mode = "train"
    elif not any(layer.trainable for layer in bn):
        mode = "inference"
    else:
        mode = "mixed"
    return GroupAudit(name, trainable, frozen, mode)


def trainable_audit(model):
    """Per-group trainable and frozen parameter counts and BatchNorm mode.

    Args:
        model: a `kerastl.TransferClassifier`.

    Returns:
        A list of `GroupAudit`, one per backbone layer group in order, then
        one for the head.

    Example:
    ```python
    model.freeze_backbone()
    audit = kerastl.models.freezing.trainable_audit(model)
    [row.trainable_params for row in audit]
    # [0, 0, 0, 0, 0, 2085]: only the head trains
    ```
    """
    rows = [_audit(group.name, group.layers) for group in model.layer_groups()]
    rows.append(_audit("head", model.head_layers))
    return rows


def format_audit(rows):
    """Renders `trainable_audit` rows as a plain-text table.

    Args:
        rows: list of `GroupAudit`.

    Example:
    ```python
    print(kerastl.models.freezing.format_audit(kerastl.models.freezing.trainable_audit(m)))
    ```
    """
    header = ("group", "trainable", "frozen", "batchnorm")
    body = [
        (r.name, f"{r.trainable_params:,}", f"{r.frozen_params:,}", r.batchnorm)
        for r in rows
    ]
    total = (
        "total",
        f"{sum(r.trainable_params for r in rows):,}",
        f"{sum(r.frozen_params for r in rows):,}",
        "",
    )
    table = [header, *body, total]
    widths = [max(len(row[i]) for row in table) for i in range(4)]

    def line(row):
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width)
            for cell, width in zip(row[1:3], widths[1:3], strict=True)
        ]
        cells.append(row[3].ljust(widths[3]))
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *map(line, body), rule, line(total)])
