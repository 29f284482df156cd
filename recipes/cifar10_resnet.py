"""CIFAR-10 at ResNet-50's 224x224 input, SGD as in the CNN-vs-ViT study.

KERAS_BACKEND=jax kerastl fit recipes/cifar10_resnet.py
"""

from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec

# The comparison's ResNet optimizer: SGD, momentum 0.9, lr 1e-3, wd 1e-4.
SGD = dict(optimizer="sgd", momentum=0.9, weight_decay=1e-4)

recipe = Recipe(
    name="cifar10_resnet",
    preset="resnet_50_imagenet",
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
        Stage(name="head", epochs=2, train="head", learning_rate=1e-2, **SGD),
        Stage(name="all", epochs=3, train="all", learning_rate=1e-3, **SGD),
    ),
)
