"""The prepared-image cache: same pixels, decoded once, safe to damage."""

import hashlib
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from kerastl.data import DataError
from kerastl.data import DataSpec
from kerastl.data import images
from kerastl.data import load_data
from kerastl.data import pipeline
from kerastl.data.prepared import PreparedImages

IMAGE_SIZE = (64, 64)


def _photo(height, width, seed):
    """Smooth gradients and a wave, shifted by `seed`: photo-like content
    that JPEG and resizing represent faithfully."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    wave = 127.5 + 100 * np.sin(x / 90 + seed) * np.cos(y / 120)
    pixels = np.stack(
        [x / width * 255, y / height * 255 * (seed % 2), wave], axis=-1
    )
    return pixels.round().astype(np.uint8)


def _photo_folder(root):
    """Two classes of large photos: baseline, progressive and EXIF-rotated
    JPEGs, and a PNG."""
    paths = []
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i, kind in enumerate(("baseline", "progressive", "rotated", "png")):
            seed = i + (4 if label == "b" else 0)
            image = Image.fromarray(_photo(600, 800, seed))
            path = (
                root
                / label
                / f"{kind} é {i}.{'png' if kind == 'png' else 'jpg'}"
            )
            exif = Image.Exif()
            if kind == "rotated":
                exif[0x0112] = 6
            if kind == "png":
                image.save(path)
            else:
                image.save(
                    path,
                    quality=95,
                    progressive=kind == "progressive",
                    exif=exif,
                )
            paths.append(path)
    return paths


def _model_inputs(root, cache_images):
    bundle = load_data(
        DataSpec(
            "folder",
            str(root),
            validation_fraction=0.5,
            cache_images=cache_images,
        ),
        image_size=IMAGE_SIZE,
        batch_size=4,
        multi_label=False,
    )
    split = bundle.splits["validation"]
    return np.concatenate([images for images, _ in split])


def _entries(cache_dir):
    return sorted(
        path
        for path in (cache_dir / "images").glob("v*/*/*")
        if not path.name.startswith(".")
    )


def test_cached_pipeline_gives_the_model_the_uncached_pixels(
    tmp_path, monkeypatch
):
    _photo_folder(tmp_path / "photos")
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("KERASTL_CACHE_DIR", str(cache_dir))
    uncached = _model_inputs(tmp_path / "photos", cache_images=False)
    assert not cache_dir.exists()
    cached = _model_inputs(tmp_path / "photos", cache_images=True)
    # Every file was prepared once, as a small JPEG (or PNG) at 2x the
    # model's size: 128 rows for these 600x800 photos (rotated: 128 wide).
    entries = _entries(cache_dir)
    assert len(entries) == 8
    for entry in entries:
        body = entry.read_bytes()[:-32]
        assert hashlib.sha256(body).digest() == entry.read_bytes()[-32:]
        with Image.open(io.BytesIO(body)) as image:
            assert min(image.size) == 128
    difference = np.abs(cached - uncached)
    assert cached.shape == uncached.shape == (4, *IMAGE_SIZE, 3)
    # JPEG quality 95 without chroma subsampling: under 1/255 on average.
    assert difference.mean() < 1.0
    assert difference.max() < 12.0


def test_later_runs_read_the_cache_without_decoding(tmp_path, monkeypatch):
    paths = _photo_folder(tmp_path / "photos")
    first = _model_inputs(tmp_path / "photos", cache_images=True)
    decodes = []
    read_rgb = images.read_rgb
    monkeypatch.setattr(
        images,
        "read_rgb",
        lambda *a, **k: decodes.append(a) or read_rgb(*a, **k),
    )
    second = _model_inputs(tmp_path / "photos", cache_images=True)
    assert decodes == []
    np.testing.assert_array_equal(first, second)
    # The same photo elsewhere is found by its contents.
    copy = tmp_path / "copy" / "a"
    copy.mkdir(parents=True)
    (copy / "same.jpg").write_bytes(paths[0].read_bytes())
    cache = PreparedImages(pipeline.decode_size(IMAGE_SIZE))
    assert cache.prepare([str(copy / "same.jpg")], verbose=False) == [None]
    assert len(decodes) == 1  # hashed once, from its decode
    assert cache.read(str(copy / "same.jpg")) == cache.read(str(paths[0]))


def test_a_changed_file_is_prepared_again(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(photo, quality=95)
    cache = PreparedImages((100, 100), root=tmp_path / "cache")
    assert cache.prepare([str(photo)], verbose=False) == [None]
    Image.new("RGB", (300, 200), (30, 30, 200)).save(photo, quality=95)
    os.utime(photo, ns=(1, 1))  # whatever the clock says
    fresh = PreparedImages((100, 100), root=tmp_path / "cache")
    assert fresh.prepare([str(photo)], verbose=False) == [None]
    pixels = np.asarray(Image.open(io.BytesIO(fresh.read(photo))))
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (30, 30, 200), atol=3)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "deleted"])
def test_a_damaged_entry_is_rebuilt(tmp_path, monkeypatch, damage):
    paths = _photo_folder(tmp_path / "photos")
    monkeypatch.setenv("KERASTL_CACHE_DIR", str(tmp_path / "cache"))
    good = _model_inputs(tmp_path / "photos", cache_images=True)
    for entry in _entries(tmp_path / "cache"):
        data = entry.read_bytes()
        if damage == "truncated":
            entry.write_bytes(data[: len(data) // 2])
        elif damage == "flipped byte":
            middle = len(data) // 2
            entry.write_bytes(
                data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :]
            )
        else:
            entry.unlink()
    # Damage found while reading, in the training loop: rebuilt there.
    cache = PreparedImages(pipeline.decode_size(IMAGE_SIZE))
    for path in paths:
        expected = images.read_rgb(path, cache.min_size)
        body = cache.read(str(path))
        decoded = np.asarray(Image.open(io.BytesIO(body)))
        assert np.abs(decoded.astype(int) - expected).mean() < 2.0
    # And by a later run: the same model input as before the damage.
    again = _model_inputs(tmp_path / "photos", cache_images=True)
    np.testing.assert_allclose(again, good, atol=1e-4)
    for entry in _entries(tmp_path / "cache"):
        data = entry.read_bytes()
        assert hashlib.sha256(data[:-32]).digest() == data[-32:]


@pytest.mark.backends("torch", reason="preparing runs no Keras backend")
def test_concurrent_runs_prepare_the_same_images_safely(tmp_path):
    paths = _photo_folder(tmp_path / "photos")
    script = textwrap.dedent(
        f"""
        import sys
        from kerastl.data.prepared import PreparedImages
        cache = PreparedImages((128, 128), root={str(tmp_path / "cache")!r})
        reasons = cache.prepare(sys.argv[1:], verbose=False)
        assert reasons == [None] * len(sys.argv[1:]), reasons
        """
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, *map(str, paths)])
        for _ in range(3)
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0, 0]
    cache = PreparedImages((128, 128), root=tmp_path / "cache")
    entries = [
        path
        for path in cache.folder.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    ]
    assert len(entries) == 8
    leftovers = [p for p in cache.root.rglob(".*") if p.is_file()]
    assert leftovers == []
    for entry in entries:
        data = entry.read_bytes()
        assert hashlib.sha256(data[:-32]).digest() == data[-32:]


def test_unreadable_files_are_still_listed(tmp_path):
    _photo_folder(tmp_path / "photos")
    (tmp_path / "photos" / "a" / "broken.jpg").write_bytes(
        (tmp_path / "photos" / "a" / "baseline é 0.jpg").read_bytes()[:2000]
    )
    (tmp_path / "photos" / "b" / "notes.jpg").write_text("not an image")
    bundle = load_data(
        DataSpec("folder", str(tmp_path / "photos")),
        image_size=IMAGE_SIZE,
        batch_size=4,
        multi_label=False,
    )
    reasons = {os.path.basename(s.path): s.reason for s in bundle.skipped}
    assert reasons["notes.jpg"] == "not an image"
    assert reasons["broken.jpg"].startswith("corrupt")
    assert sum(bundle.num_examples.values()) == 8


def test_a_cache_that_cannot_be_written_says_what_to_do(tmp_path, monkeypatch):
    _photo_folder(tmp_path / "photos")
    blocker = tmp_path / "not a folder"
    blocker.write_text("")
    monkeypatch.setenv("KERASTL_CACHE_DIR", str(blocker))
    with pytest.raises(DataError, match="cache_images = False"):
        _model_inputs(tmp_path / "photos", cache_images=True)


def test_images_too_long_for_jpeg_are_kept_as_png(tmp_path):
    # Shrunk to 64 rows, it is still 85,333 pixels long: over JPEG's limit.
    strip = tmp_path / "strip.png"
    Image.new("RGB", (200_000, 150), (10, 200, 30)).save(strip)
    cache = PreparedImages((64, 64), root=tmp_path / "cache")
    assert cache.prepare([str(strip)], verbose=False) == [None]
    body = cache.read(str(strip))
    assert body.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(body)) as image:
        assert image.size == (85_333, 64)


def test_images_kept_whole_are_stored_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (60, 90, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "small.png")
    cache = PreparedImages((128, 128), root=tmp_path / "cache")
    assert cache.prepare([str(tmp_path / "small.png")], verbose=False) == [None]
    body = cache.read(str(tmp_path / "small.png"))
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(body))), pixels
    )
