from kerastl import Recipe
from kerastl.data import DataSpec

first = Recipe(name="a", preset="p", data=DataSpec("tfds", "cifar10"))
second = Recipe(name="b", preset="p", data=DataSpec("tfds", "cifar10"))
