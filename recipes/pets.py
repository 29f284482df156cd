"""Oxford-IIIT Pets (37 cat and dog breeds) on ResNet-50, head first.

KERAS_BACKEND=jax kerastl fit recipes/pets.py
"""

from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec

recipe = Recipe(
    name="pets",
    preset="resnet_50_imagenet",
    data=DataSpec(
        "tfds",
        "oxford_iiit_pet",
        # tfds ships train and test only: hold out 10% of train to validate.
        train="train[:90%]",
        validation="train[90%:]",
        test="test",
    ),
    batch_size=32,
    augment=Augment(flip=True, random_resized_crop=True),
    stages=(
        # A new head on frozen features: a high rate is safe.
        Stage(name="head", epochs=3, train="head", learning_rate=1e-3),
        # The last ResNet stage (stack3) adapts; 10x gentler.
        Stage(name="last_stage", epochs=2, train=1, learning_rate=1e-4),
        # Everything, gently again, so pretrained features are not wrecked.
        Stage(name="all", epochs=2, train="all", learning_rate=1e-5),
    ),
)
