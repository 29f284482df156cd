import os

# Before Keras is imported anywhere: hide TensorFlow's native logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--run-large",
        action="store_true",
        help="Run tests marked `large`: they download real presets.",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="downloads presets; pass --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"keras backend: {keras.config.backend()}"


@pytest.fixture(autouse=True)
def seeded():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def feature_cache_dir(tmp_path_factory, monkeypatch):
    # Runs that cache features write to a per-session folder, never to the
    # user's ~/.cache.
    root = tmp_path_factory.getbasetemp() / "feature-cache"
    monkeypatch.setenv("KERASTL_CACHE_DIR", str(root))
