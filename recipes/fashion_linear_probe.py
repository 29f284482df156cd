"""Linear probe for the Fashion-MNIST transfer experiment: only a new head
trains, on the frozen features of the ResNet pretrained on classes 0-4,
from the same 100 images of classes 5-9 as `recipes/fashion_transfer.py`.

KERAS_BACKEND=jax kerastl fit recipes/fashion_linear_probe.py
"""

from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec
from kerastl.data.idx_source import FASHION_MNIST_CLASSES
from kerastl.data.idx_source import FASHION_MNIST_DIR

recipe = Recipe(
    name="fashion_linear_probe",
    # The pretraining run's preset, relative to the working directory.
    preset="runs/fashion_pretrain/preset",
    data=DataSpec(
        "idx",
        FASHION_MNIST_DIR,
        class_names=FASHION_MNIST_CLASSES,
        classes=(5, 6, 7, 8, 9),
        train_per_class=20,  # the same seeded sample as fashion_transfer
        validation_fraction=0.01,
    ),
    batch_size=32,
    # Unaugmented, as in fashion_transfer: the head trains on backbone
    # features cached once.
    augment=Augment(flip=False),
    # fashion_transfer's head stage alone. The pretrained features are
    # large (ReLU then average pooling): 1e-3 barely moves the head.
    stages=(Stage(name="head", epochs=100, train="head", learning_rate=1e-2),),
)
