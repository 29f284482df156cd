"""Old module paths of kerastl 0.1, kept importable for one release.

kerastl 0.2 grouped its modules into packages along the data flow
(`models/`, `data/`, `train/`, `evaluate/`, `deploy/`, `runs/`, `utils/`).
Importing a module by its 0.1 path still works and gives the module at its
new path, with a `FutureWarning` naming it (a `DeprecationWarning` would be
hidden from the scripts that import it). CHANGELOG.md lists the moves and
the names that moved between modules.
"""

import importlib
import importlib.abc
import importlib.util
import warnings

REMOVED_IN = "0.3"

# Old dotted path -> new dotted path.
MOVED = {
    "kerastl.atomic": "kerastl.utils.atomic",
    "kerastl.logs": "kerastl.utils.logs",
    "kerastl.text": "kerastl.utils.text",
    "kerastl.downloads": "kerastl.utils.downloads",
    "kerastl.distribution": "kerastl.utils.distribution",
    "kerastl.backbones": "kerastl.models.backbones",
    "kerastl.classifier": "kerastl.models.classifier",
    "kerastl.pooling": "kerastl.models.pooling",
    "kerastl.freezing": "kerastl.models.freezing",
    "kerastl.presets": "kerastl.models.presets",
    "kerastl.preprocessing": "kerastl.models.preprocessing",
    "kerastl.standins": "kerastl.models.standins",
    "kerastl.training": "kerastl.train.stages",
    "kerastl.optimizers": "kerastl.train.optimizers",
    "kerastl.losses": "kerastl.models.losses",
    "kerastl.features": "kerastl.train.features",
    "kerastl.checkpoints": "kerastl.train.checkpoints",
    "kerastl.distill": "kerastl.train.distillation",
    "kerastl.lr_find": "kerastl.train.lr_find",
    "kerastl.calibration": "kerastl.evaluate.calibration",
    "kerastl.thresholds": "kerastl.evaluate.thresholds",
    "kerastl.evaluation": "kerastl.evaluate.metrics",
    "kerastl.plots": "kerastl.evaluate.plots",
    "kerastl.report": "kerastl.evaluate.report",
    "kerastl.prediction": "kerastl.deploy.predict",
    "kerastl.export": "kerastl.deploy.export",
    "kerastl.recipe": "kerastl.runs.recipe",
    "kerastl.rundir": "kerastl.runs.rundir",
    "kerastl.run": "kerastl.runs.fit",
    "kerastl.compare": "kerastl.runs.compare",
    "kerastl.data.table": "kerastl.data.csv_source",
    "kerastl.data.carving": "kerastl.data.validation_split",
    "kerastl.data.folder": "kerastl.data.folder_source",
    "kerastl.data.idx": "kerastl.data.idx_source",
    "kerastl.data.arrays": "kerastl.data.array_source",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a module by its old path and hands back the new module.

    Example:
    ```python
    import kerastl.classifier  # FutureWarning: ... kerastl.models.classifier
    ```
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(
            f"`{spec.name}` moved to `{new}` in kerastl 0.2; the old path "
            f"stops working in kerastl {REMOVED_IN}. Import `{new}` instead.",
            FutureWarning,
            stacklevel=2,
        )
        # The import system files this module object under the old name
        # too, so both paths give the same classes and functions.
        return importlib.import_module(new)

    def exec_module(self, module):
        # Already executed under its new name.
        pass
