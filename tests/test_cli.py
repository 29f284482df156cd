import keras
import pytest
from click.testing import CliRunner

import kerastl
from kerastl.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert kerastl.__version__ in result.output


def test_info_lists_versions_and_devices(runner):
    result = runner.invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.output.splitlines())
    assert lines["keras"] == keras.__version__
    assert lines["backend"] == keras.config.backend()
    for backend in ("jax", "tensorflow", "torch"):
        assert "cpu:0" in lines[backend]
