"""PASCAL VOC 2007 as multi-label: an image carries every object class in it.

KERAS_BACKEND=jax kerastl fit recipes/voc2007_multilabel.py
"""

from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec

recipe = Recipe(
    name="voc2007_multilabel",
    preset="resnet_50_imagenet",
    data=DataSpec(
        "tfds",
        "voc/2007",
        # The label of each object box; kerastl makes them multi-hot.
        label_key="objects/label",
        train="train",
        validation="validation",
        test="test",
    ),
    multi_label=True,  # sigmoid head, binary cross-entropy
    batch_size=32,
    augment=Augment(flip=True),
    stages=(
        Stage(name="head", epochs=3, train="head", learning_rate=1e-3),
        Stage(name="last_stage", epochs=2, train=1, learning_rate=1e-4),
        Stage(name="all", epochs=2, train="all", learning_rate=1e-5),
    ),
)
