"""Pretraining for the Fashion-MNIST transfer experiment: a small ResNet,
from scratch, on classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat).

KERAS_BACKEND=jax kerastl fit recipes/fashion_pretrain.py \
    --output-dir runs/fashion_pretrain

The run directory's `preset/` is the pretrained model that
`recipes/fashion_transfer.py` and `fashion_linear_probe.py` start from.
Needs the IDX files: `apt-get install dataset-fashion-mnist`.
"""

import pathlib

from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec
from kerastl.data.idx_source import FASHION_MNIST_CLASSES
from kerastl.data.idx_source import FASHION_MNIST_DIR

# Architecture only (no weights): a 3-stage basic-block ResNet, 1.2M
# parameters, 32x32 input; the 28x28 grayscale images are made RGB and
# resized by the pipeline, normalized with Fashion-MNIST's mean and std.
ARCHITECTURE = pathlib.Path(__file__).parent / "presets" / "fashion_resnet"

recipe = Recipe(
    name="fashion_pretrain",
    preset=str(ARCHITECTURE),
    pretrained=False,  # random initial weights: this run makes them
    data=DataSpec(
        "idx",
        FASHION_MNIST_DIR,
        class_names=FASHION_MNIST_CLASSES,
        classes=(0, 1, 2, 3, 4),  # all 30,000 training images of these
        validation_fraction=0.1,
    ),
    batch_size=128,
    augment=Augment(flip=True),
    stages=(
        Stage(
            name="scratch",
            epochs=3,
            train="all",
            train_bn=True,  # random BatchNorm statistics must be learned
            learning_rate=2e-3,
            weight_decay=5e-4,
            schedule="cosine",
            warmup_fraction=0.05,
        ),
    ),
)
