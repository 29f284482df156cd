"""How a backbone is cut into layer groups, the units that freezing,
discriminative learning rates and gradual unfreezing work on.
"""

import dataclasses
import math
import re

import keras

from kerastl.utils import keras_internals

# A stage of a flat convolutional backbone is named `stack0_...` (ResNet,
# DenseNet), `block1a_...` (EfficientNet), `block_1_...` (MobileNet),
# `block1_...` (VGG, Xception) or `stage_0_...` (CSPNet, Swin). DenseNet's
# `transition1` follows `stack1` and belongs to the same stage.
_STAGE_PATTERN = re.compile(r"^(stack|block|stage|transition)_?(\d+)")


@dataclasses.dataclass
class LayerGroup:
    """An ordered slice of a backbone that is frozen or trained as one.

    Args:
        name: str. The keras-hub name of the group's first layer or stage
            (`"stem"`, `"stack0"`, `"transformer_block_1"`, ...).
        layers: list of `keras.layers.Layer`. The layers of the group.

    Example:
    ```python
    for group in model.layer_groups():
        print(group.name, group.count_params())
    ```
    """

    name: str
    layers: list

    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def count_params(self):
        return count_params(self.weights)


def _children(layer):
    return [
        child
        for child in keras_internals.all_layers(
            layer, include_self=False, recursive=False
        )
        if not isinstance(child, keras.layers.InputLayer)
    ]


def count_params(weights):
    """Number of scalars in a list of weights, read from their shapes.

    Example:
    ```python
    kerastl.models.grouping.count_params(model.trainable_weights)
    ```
    """
    return sum(math.prod(w.shape) for w in weights)


def _param_count(layer):
    return count_params(layer.weights)


def _units(backbone):
    """Top-level layers, with the encoder of a nested model opened up.

    Transformers keep their blocks inside one encoder layer. The layer holding
    most of the parameters is opened while it is made of repeated blocks, so
    each block becomes a unit of its own. Returns the units and the ids of
    those that are blocks.
    """
    units = _children(backbone)
    blocks = set()
    total = max(_param_count(backbone), 1)
    while True:
        biggest = max(units, key=_param_count)
        if 2 * _param_count(biggest) < total:
            break
        children = _children(biggest)
        classes = [type(child) for child in children if child.weights]
        repeated = {cls for cls in classes if classes.count(cls) > 1}
        if not repeated:
            break
        blocks.update(id(c) for c in children if type(c) in repeated)
        index = units.index(biggest)
        units[index : index + 1] = children
    return units, blocks


def blocks(backbone):
    """A transformer's repeated blocks, input to output; `[]` for a convnet.

    The blocks `layer_groups` gives a group each: the repeated layers of the
    encoder that holds most of the backbone's parameters (ViT's
    `transformer_block_1`, ..., DINOv2's layers).

    Args:
        backbone: a `keras_hub.models.Backbone` instance.

    Example:
    ```python
    [b.name for b in kerastl.models.grouping.blocks(vit_backbone)]
    # ["transformer_block_1", ..., "transformer_block_12"]
    ```
    """
    units, block_ids = _units(backbone)
    return [unit for unit in units if id(unit) in block_ids]


def layer_groups(backbone):
    """Splits a backbone into ordered `LayerGroup`s, input to output.

    ResNet-style convnets give `stem` then one group per stage (`stack0`,
    `stack1`, ...); layers after the last stage (a final BatchNorm) join it.
    Transformers give their embedding layer, one group per block and the final
    normalization. Other keras-hub backbones are split the same way, by their
    stage names or their repeated blocks.

    Args:
        backbone: a `keras_hub.models.Backbone` instance.

    Example:
    ```python
    [g.name for g in kerastl.models.grouping.layer_groups(resnet_backbone)]
    # ["stem", "stack0", "stack1", "stack2", "stack3"]
    ```
    """
    units, blocks = _units(backbone)
    has_stages = any(_STAGE_PATTERN.match(unit.name) for unit in units)
    groups, keys = [], []

    def start(name, key, unit):
        groups.append(LayerGroup(name, [unit]))
        keys.append(key)

    for unit in units:
        match = _STAGE_PATTERN.match(unit.name)
        if id(unit) in blocks:
            start(unit.name, "block", unit)
        elif match:
            key = f"stage{match.group(2)}"
            if keys and keys[-1] == key:
                groups[-1].layers.append(unit)
            else:
                start(match.group(0), key, unit)
        elif not groups:
            start("stem" if has_stages else unit.name, "stem", unit)
        elif not unit.weights or keys[-1] != "block":
            # Weightless glue, the rest of the stem, and layers after the
            # last stage (`post_bn`, `top_conv`) join the group before them.
            groups[-1].layers.append(unit)
        else:
            # A transformer's final normalization is a group of its own.
            start(unit.name, "norm", unit)
    return [group for group in groups if group.weights]
