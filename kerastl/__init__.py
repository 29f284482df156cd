"""kerastl: transfer learning for image classification on any Keras backend.

Keras picks its backend when it is first imported, so `import kerastl`
imports no Keras: model classes load when first used, and `kerastl.cli` can
choose the backend before that.

`keras.models.load_model` finds a custom class only if the module defining
it has run, and it imports no module outside Keras' own packages to find
one. So kerastl registers its saveable classes with Keras as soon as both
are imported, in either order: at once if Keras came first, otherwise right
after Keras' import. TensorFlow's native start-up lines are kept out of the
console meanwhile (`kerastl.utils.logs`).
"""

import contextlib
import importlib
import importlib.abc
import sys

from kerastl import _moved
from kerastl.utils import distribution
from kerastl.utils import jax_cpu
from kerastl.utils import logs

__version__ = "0.2.0.dev0"

_LAZY_ATTRIBUTES = {
    "TransferClassifier": "kerastl.models.classifier",
    "FeaturePooling": "kerastl.models.pooling",
    "LayerGroup": "kerastl.models.grouping",
    "Recipe": "kerastl.runs.recipe",
    "Stage": "kerastl.train.stage",
    "fine_tune": "kerastl.train.stages",
    "Distiller": "kerastl.train.distillation",
    "select": "kerastl.runs.select",
    "doctor": "kerastl.runs.doctor",
}
# Modules offered at the top level: `kerastl.explain.gradcam(...)`.
_LAZY_MODULES = {"explain": "kerastl.evaluate.explain"}

__all__ = ["__version__", *_LAZY_ATTRIBUTES, *_LAZY_MODULES]

# Every module defining a class that a `.keras` file can name (decorated
# with `keras.saving.register_keras_serializable`).
_SERIALIZABLE_MODULES = (
    "kerastl.models.classifier",
    "kerastl.models.decisions",
    "kerastl.train.distillation",
    "kerastl.models.losses",
    "kerastl.train.optimizers",
    "kerastl.models.pooling",
)
# Packages that can import Keras while they are themselves half-imported
# (TensorFlow imports Keras from its `__init__`) and that registering needs
# whole: registering waits until the outermost of them has finished. Their
# imports also print TensorFlow's native start-up lines.
_WATCHED_PACKAGES = ("keras", "keras_hub", "tensorflow", "tensorflow_text")


def _import_model_modules(names):
    with logs.quiet_native_logs():
        # Before Keras and TensorFlow can compute: keeps TensorFlow off the
        # GPUs that JAX or PyTorch train on.
        distribution.prepare_process()
        # On JAX, the small convolutions XLA's CPU backend is slow at.
        jax_cpu.install()
        return [importlib.import_module(name) for name in names]


def __getattr__(name):
    if name in _LAZY_MODULES:
        (value,) = _import_model_modules([_LAZY_MODULES[name]])
    elif name in _LAZY_ATTRIBUTES:
        (module,) = _import_model_modules([_LAZY_ATTRIBUTES[name]])
        value = getattr(module, name)
    else:
        raise AttributeError(f"module 'kerastl' has no attribute {name!r}")
    # Cached, so later lookups skip this function and its device set-up.
    globals()[name] = value
    return value


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers kerastl's saveable classes once Keras has been imported.

    Installed first in `sys.meta_path`, it watches the imports of
    `_WATCHED_PACKAGES` (hiding their native logs) and of kerastl's own
    modules, which import Keras themselves. When the outermost watched
    import ends with Keras imported, the finder removes itself and imports
    `_SERIALIZABLE_MODULES`. Waiting for the outermost one means registering
    never meets a module half-imported, as `kerastl.models.classifier` is
    while its own `import keras` runs. It finds nothing itself: the finders
    after it do, and it only wraps their loader.
    """

    def __init__(self):
        self._running = 0

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _moved.MOVED or not (
            fullname in _WATCHED_PACKAGES or fullname.startswith("kerastl.")
        ):
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _WatchedLoader(self, spec.loader)
                return spec
        return None

    def exec_module(self, loader, module):
        quiet = logs.quiet_native_logs
        if module.__name__ not in _WATCHED_PACKAGES:
            quiet = contextlib.nullcontext
        self._running += 1
        try:
            with quiet():
                loader.exec_module(module)
        finally:
            self._running -= 1
        if self._running or "keras" not in sys.modules:
            return
        try:
            sys.meta_path.remove(self)
        except ValueError:
            # Another thread finished an import at the same moment and
            # registers.
            return
        _import_model_modules(_SERIALIZABLE_MODULES)


class _WatchedLoader:
    """Runs a module's own loader through `_RegisterAfterKeras`."""

    def __init__(self, finder, loader):
        self._finder = finder
        self._loader = loader

    def __getattr__(self, name):
        # `get_code`, `is_package`, resources...: as the loader has them.
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps its own loader, as if kerastl were not there.
        module.__loader__ = module.__spec__.loader = self._loader
        self._finder.exec_module(self._loader, module)


sys.meta_path.append(_moved.MovedModules())
if "keras" in sys.modules:
    _import_model_modules(_SERIALIZABLE_MODULES)
else:
    sys.meta_path.insert(0, _RegisterAfterKeras())
