"""The README's Python quickstart runs as written, on a local preset."""

import pathlib
import re

import numpy as np

from kerastl import testing

README = pathlib.Path(__file__).parents[1] / "README.md"


def quickstart_code():
    text = README.read_text()
    section = text.split("## Python quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_python_quickstart(tmp_path, monkeypatch):
    code = quickstart_code()
    assert '"resnet_50_imagenet"' in code
    testing.save_tiny_preset("resnet", tmp_path / "resnet_tiny")
    # The real preset is 224x224; the stand-in takes 32x32 images.
    code = code.replace(
        '"resnet_50_imagenet"', repr(str(tmp_path / "resnet_tiny"))
    )
    images, labels = testing.color_images(37 * 2, num_classes=37)
    dataset = testing.ClassifierTestCase.dataset(images, labels, batch_size=16)
    monkeypatch.chdir(tmp_path)
    namespace = {"train_ds": dataset, "val_ds": dataset}
    exec(compile(code, "README.md", "exec"), namespace)
    model = namespace["model"]
    assert model.num_classes == 37
    assert (tmp_path / "pets.keras").exists()
    assert (tmp_path / "pets_preset" / "kerastl.json").exists()
    assert np.isfinite(model.predict(images[:2], verbose=0)).all()
