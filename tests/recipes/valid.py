from kerastl import Recipe
from kerastl import Stage
from kerastl.data import DataSpec

recipe = Recipe(
    name="valid",
    preset="resnet_50_imagenet",
    data=DataSpec("tfds", "cifar10", test="test"),
    stages=(Stage(epochs=2), Stage(epochs=1, train=1, learning_rate=1e-4)),
)
