"""kerastl: transfer learning for image classification on any Keras backend.

Keras picks its backend when it is first imported, so this package imports
Keras only when a model class is first used: `kerastl.cli` can choose the
backend before that.
"""

import importlib

from kerastl import distribution
from kerastl import logs

__version__ = "0.1.0"

_LAZY_ATTRIBUTES = {
    "TransferClassifier": "kerastl.classifier",
    "FeaturePooling": "kerastl.pooling",
    "LayerGroup": "kerastl.backbones",
    "Recipe": "kerastl.recipe",
    "Stage": "kerastl.recipe",
    "fine_tune": "kerastl.training",
    "Distiller": "kerastl.distill",
}

__all__ = ["__version__", *_LAZY_ATTRIBUTES]


def __getattr__(name):
    if name not in _LAZY_ATTRIBUTES:
        raise AttributeError(f"module 'kerastl' has no attribute {name!r}")
    with logs.quiet_native_logs():
        # Before Keras and TensorFlow can compute: keeps TensorFlow off the
        # GPUs that JAX or PyTorch train on.
        distribution.prepare_process()
        module = importlib.import_module(_LAZY_ATTRIBUTES[name])
    # Cached, so later lookups skip this function and its device set-up.
    value = globals()[name] = getattr(module, name)
    return value
