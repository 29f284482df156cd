"""The 0.1 module paths still import, give the moved module and warn."""

import importlib.util
import subprocess
import sys

import pytest

from kerastl import _moved


@pytest.mark.parametrize("new", sorted(set(_moved.MOVED.values())))
def test_every_new_path_exists(new):
    assert importlib.util.find_spec(new) is not None


@pytest.mark.backends(
    "torch", reason="module paths are the same on every backend"
)
def test_an_old_path_gives_the_new_module_with_a_warning():
    # A fresh process: this one has imported the modules already.
    script = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "import kerastl\n"
        "try:\n"
        "    import kerastl.classifier\n"
        "except FutureWarning as warning:\n"
        "    print(warning)\n"
        "warnings.simplefilter('ignore')\n"
        "import kerastl.classifier\n"
        "import kerastl.data.table\n"
        "from kerastl.models.classifier import TransferClassifier\n"
        "from kerastl.data.csv_source import load_table\n"
        "print(kerastl.classifier.TransferClassifier is TransferClassifier)\n"
        "print(kerastl.data.table.load_table is load_table)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    warning, same_class, same_function = result.stdout.splitlines()[-3:]
    assert "`kerastl.classifier` moved to `kerastl.models.classifier`" in (
        warning
    )
    assert "Import `kerastl.models.classifier` instead" in warning
    assert (same_class, same_function) == ("True", "True")
