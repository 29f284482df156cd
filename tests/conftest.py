import os
import pathlib

# Before Keras is imported anywhere: hide TensorFlow's native logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The scripts and recipes that tests run in subprocesses import the test kit
# (tests/kit.py) as the tests do.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(
        None, [str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH")]
    )
)

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--run-large",
        action="store_true",
        help="Run tests marked `large`: they download real presets.",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backends(*names, reason): runs only on these Keras backends.",
    )
    config.addinivalue_line(
        "markers",
        "skip_backends(*names, reason): skipped on these Keras backends.",
    )


def pytest_collection_modifyitems(config, items):
    backend = keras.config.backend()
    large = pytest.mark.skip(reason="downloads presets; pass --run-large")
    for item in items:
        if "large" in item.keywords and not config.getoption("--run-large"):
            item.add_marker(large)
        only = item.get_closest_marker("backends")
        if only and backend not in only.args:
            item.add_marker(pytest.mark.skip(reason=only.kwargs["reason"]))
        skipped = item.get_closest_marker("skip_backends")
        if skipped and backend in skipped.args:
            item.add_marker(pytest.mark.skip(reason=skipped.kwargs["reason"]))


def pytest_report_header(config):
    return f"keras backend: {keras.config.backend()}"


@pytest.fixture(autouse=True)
def seeded():
    # Without its `gc.collect()`: with TensorFlow, JAX and PyTorch loaded
    # that takes 0.3 s, a minute and a half of every backend's session;
    # Python's own collector still runs.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def feature_cache_dir(tmp_path_factory, monkeypatch):
    # Cached features and prepared images go to a per-session folder, never
    # to the user's ~/.cache.
    root = tmp_path_factory.getbasetemp() / "feature-cache"
    monkeypatch.setenv("KERASTL_CACHE_DIR", str(root))
