"""Oxford-IIIT Pets on ViT-B/16 pretrained on ImageNet-21k, head first.

KERAS_BACKEND=jax kerastl fit recipes/pets_vit.py
"""

from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec

recipe = Recipe(
    name="pets_vit",
    # ImageNet-21k pretraining, 224x224, 16x16 patches.
    preset="vit_base_patch16_224_imagenet21k",
    data=DataSpec(
        "tfds",
        "oxford_iiit_pet",
        train="train[:90%]",  # 10% of train held out: tfds has no val split
        validation="train[90%:]",
        test="test",
    ),
    batch_size=32,
    augment=Augment(flip=True, random_resized_crop=True),
    stages=(
        Stage(name="head", epochs=3, train="head", learning_rate=1e-3),
        # The last 4 groups: final norm and the last 3 transformer blocks.
        Stage(name="last_blocks", epochs=2, train=4, learning_rate=1e-5),
        # AdamW 1e-5 for all of ViT, as in the CNN-vs-ViT comparison.
        Stage(
            name="all",
            epochs=2,
            train="all",
            learning_rate=1e-5,
            weight_decay=1e-4,
        ),
    ),
)
