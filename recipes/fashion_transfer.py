"""Transfer on Fashion-MNIST: the ResNet pretrained on classes 0-4
(`recipes/fashion_pretrain.py`) fine-tuned on classes 5-9 (Sandal, Shirt,
Sneaker, Bag, Ankle boot) from 20 labelled images per class.

KERAS_BACKEND=jax kerastl fit recipes/fashion_pretrain.py \
    --output-dir runs/fashion_pretrain
KERAS_BACKEND=jax kerastl fit recipes/fashion_transfer.py

Compare with `fashion_scratch.py` and `fashion_linear_probe.py`, or run all
three over 3 seeds with `python experiments/fashion_mnist.py`.
"""

from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec
from kerastl.data.idx_source import FASHION_MNIST_CLASSES
from kerastl.data.idx_source import FASHION_MNIST_DIR

recipe = Recipe(
    name="fashion_transfer",
    # The pretraining run's preset, relative to the working directory.
    preset="runs/fashion_pretrain/preset",
    data=DataSpec(
        "idx",
        FASHION_MNIST_DIR,
        class_names=FASHION_MNIST_CLASSES,
        classes=(5, 6, 7, 8, 9),
        train_per_class=20,  # 100 labelled images, drawn under the seed
        # 60 images per class, to watch training and choose these
        # settings; the measure is the 5,000 test images of these classes.
        validation_fraction=0.01,
    ),
    batch_size=32,
    # No random augmentation (a flip did not help on validation), so the
    # head stage trains on backbone features cached once: long and cheap.
    augment=Augment(flip=False),
    stages=(
        # A new head on frozen pretrained features, trained to convergence
        # first: unfreezing under a half-trained head (10 epochs) cost
        # 2 points. The features are large (ReLU then average pooling), so
        # 1e-2: at 1e-3 the head barely moves.
        Stage(name="head", epochs=100, train="head", learning_rate=1e-2),
        # Then everything, gentler than pretraining's 2e-3. BatchNorm keeps
        # its pretraining statistics (batches of 32 would make noisy new
        # ones). 1e-4, 1e-3, cosine decay, trained BatchNorm or layer-wise
        # decay all land within a point of this on validation.
        Stage(name="all", epochs=20, train="all", learning_rate=3e-4),
    ),
)
