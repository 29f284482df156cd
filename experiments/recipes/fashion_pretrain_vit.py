"""Pretraining a small ViT the way `recipes/fashion_pretrain.py` trains
its ResNet: from scratch, on Fashion-MNIST classes 0-4. A candidate for
the `kerastl select` experiment (`experiments/select_fashion.py`).

KERAS_BACKEND=tensorflow kerastl fit \
    experiments/recipes/fashion_pretrain_vit.py \
    --output-dir runs/fashion_pretrain_vit
"""

import dataclasses
import importlib.util
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "fashion_pretrain", HERE.parents[1] / "recipes" / "fashion_pretrain.py"
)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

recipe = dataclasses.replace(
    _module.recipe,
    name="fashion_pretrain_vit",
    # Architecture only: 4 blocks, width 128, 4x4 patches of the 32x32
    # input (64 tokens and a class token), 0.54M parameters; the same
    # normalization as the ResNet.
    preset=str(HERE.parent / "presets" / "fashion_vit"),
)
