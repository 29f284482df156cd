"""CIFAR-10 at ViT-B/16's 224x224 input, AdamW as in the CNN-vs-ViT study.

KERAS_BACKEND=jax kerastl fit recipes/cifar10_vit.py
"""

from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec

recipe = Recipe(
    name="cifar10_vit",
    preset="vit_base_patch16_224_imagenet",
    data=DataSpec(
        "tfds",
        "cifar10",
        train="train[:90%]",  # 5,000 of the 50,000 held out to validate
        validation="train[90%:]",
        test="test",
    ),
    # 32x32 images are upsampled to the preset's 224x224 by the pipeline.
    batch_size=64,
    augment=Augment(flip=True),
    stages=(
        Stage(name="head", epochs=2, train="head", learning_rate=1e-3),
        # The comparison's ViT optimizer: AdamW, lr 1e-5, weight decay 1e-4.
        Stage(
            name="all",
            epochs=3,
            train="all",
            optimizer="adamw",
            learning_rate=1e-5,
            weight_decay=1e-4,
        ),
    ),
)
