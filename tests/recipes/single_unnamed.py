from kerastl import Recipe
from kerastl.data import DataSpec

my_run = Recipe(
    name="unnamed",
    preset="resnet_50_imagenet",
    data=DataSpec("tfds", "cifar10"),
)
