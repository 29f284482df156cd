import keras
import kit
import numpy as np
import pytest
import tensorflow as tf

from kerastl import TransferClassifier
from kerastl.train import features
from kerastl.train import head_training
from kerastl.utils import cache

HEADS = [
    pytest.param(False, id="softmax"),
    pytest.param(True, id="sigmoid"),
]

NUM_CLASSES = 3


def build(multi_label=False, image_size=32, **kwargs):
    backbone, converter = kit.tiny_resnet(image_size)
    model = TransferClassifier(
        backbone,
        num_classes=NUM_CLASSES,
        image_converter=converter,
        multi_label=multi_label,
        **kwargs,
    )
    model.freeze_backbone()
    return model


def twin(model, **changes):
    """The same model in a second object, as a later run would load it,
    with the backbone's weights and any `build` arguments in `changes`."""
    same = dict(multi_label=model.multi_label, hidden_dim=model.hidden_dim)
    other = build(**{**same, **changes})
    other.backbone.set_weights(model.backbone.get_weights())
    if not changes:
        other.set_weights(model.get_weights())
    return other


def toy_data(multi_label=False, count=16, seed=0):
    images, labels = kit.color_images(count, NUM_CLASSES, seed=seed)
    if multi_label:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 2, (count, NUM_CLASSES)).astype("float32")
    return images, labels


def batches(images, labels, batch_size=4):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        batch_size
    )


def numpy_weights(layers):
    return [
        keras.ops.convert_to_numpy(w) for layer in layers for w in layer.weights
    ]


@pytest.mark.parametrize("multi_label", HEADS)
def test_same_head_and_history_as_in_graph_fit(multi_label, tmp_path):
    images, labels = toy_data(multi_label)
    in_graph = build(multi_label, hidden_dim=6)
    cached = twin(in_graph)
    for model in (in_graph, cached):
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    train, validation = batches(images, labels), batches(images[:8], labels[:8])

    expected = in_graph.fit(
        train, validation_data=validation, epochs=2, verbose=0
    )
    history = head_training.fit_head_cached(
        cached, train, validation, epochs=2, cache_dir=tmp_path, verbose=0
    )

    head = [cached.head_hidden, cached.output_dense]
    expected_head = [in_graph.head_hidden, in_graph.output_dense]
    for weight, want in zip(
        numpy_weights(head), numpy_weights(expected_head), strict=True
    ):
        np.testing.assert_allclose(weight, want, atol=1e-5)
    assert history.history.keys() == expected.history.keys()
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-4)
    np.testing.assert_allclose(
        cached.predict(images, verbose=0),
        in_graph.predict(images, verbose=0),
        atol=1e-5,
    )


def test_linear_probe_matches_hand_computed_sgd(tmp_path):
    images, labels = toy_data()
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    pooled = model.feature_extractor().predict(images, verbose=0)
    kernel, bias = numpy_weights([model.output_dense])

    # Softmax cross-entropy by hand: the logits' gradient is (p - y) / B.
    def softmax(logits):
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    # Batches of 5, 5, 5 and 1: the last, short one counts as a step too.
    for _ in range(2):
        for start in range(0, len(images), 5):
            x = pooled[start : start + 5]
            y = np.eye(NUM_CLASSES)[labels[start : start + 5]]
            grad = (softmax(x @ kernel + bias) - y) / len(x)
            kernel = kernel - 0.1 * x.T @ grad
            bias = bias - 0.1 * grad.sum(axis=0)

    head_training.fit_head_cached(
        model,
        batches(images, labels, batch_size=5),
        epochs=2,
        cache_dir=tmp_path,
        verbose=0,
    )

    trained_kernel, trained_bias = numpy_weights([model.output_dense])
    np.testing.assert_allclose(trained_kernel, kernel, atol=1e-5)
    np.testing.assert_allclose(trained_bias, bias, atol=1e-5)
    # The model itself now predicts with the trained head.
    np.testing.assert_allclose(
        model.predict(images, verbose=0),
        softmax(pooled @ kernel + bias),
        atol=1e-5,
    )


@pytest.mark.parametrize("multi_label", HEADS)
def test_history_has_the_keys_model_fit_logs(multi_label, tmp_path):
    images, labels = toy_data(multi_label, count=8)
    data = batches(images, labels, batch_size=8)
    model = build(multi_label)
    expected = model.fit(data, validation_data=data, epochs=1, verbose=0)
    history = head_training.fit_head_cached(
        model, data, data, epochs=1, cache_dir=tmp_path, verbose=0
    )
    assert sorted(history.history) == sorted(expected.history)


def test_later_call_reads_the_cache_without_running_the_backbone(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path))
    images, ids = kit.random_images(16), np.arange(16)
    model = build()
    expected = model.feature_extractor().predict(images, verbose=0)
    # Labels are the image indices, so features can be matched to images
    # whatever order a pass yields them in.
    data = (
        tf.data.Dataset.from_tensor_slices((images, ids))
        .shuffle(16, seed=1, reshuffle_each_iteration=True)
        .batch(4)
    )
    lines = []

    first = features.cache_features(
        model, data, verbose=0, print_fn=lines.append
    )
    assert not first.hit and first.computed == 16
    assert first.path.parent.parent == tmp_path / "features"
    assert first.batch_size == 4
    np.testing.assert_allclose(
        first.features, expected[first.labels], atol=1e-5
    )
    stored = (first.path / "features.npy").read_bytes()

    later = twin(model)
    monkeypatch.setattr(later.backbone, "call", _no_backbone)
    second = features.cache_features(
        later, data, verbose=0, print_fn=lines.append
    )
    assert second.hit and second.computed == 0
    assert second.path == first.path
    # The second pass came in another order; features follow the images.
    assert not np.array_equal(second.labels, first.labels)
    np.testing.assert_allclose(
        second.features, expected[second.labels], atol=1e-5
    )
    assert (first.path / "features.npy").read_bytes() == stored
    assert lines == [
        f"Feature cache written (data): {first.path} (16 of 16 images "
        "through the backbone)",
        f"Feature cache hit (data): {first.path}",
    ]


def _no_backbone(*args, **kwargs):
    raise AssertionError("the backbone ran on a cache hit")


def test_model_key_follows_what_computes_features():
    model = build()
    key = features.model_key(model)
    assert features.model_key(twin(model)) == key
    assert features.model_key(twin(model, image_size=40)) != key
    assert features.model_key(twin(model, pooling="max")) != key
    changed = twin(model)
    kernel = changed.backbone.weights[0]
    kernel.assign(keras.ops.convert_to_numpy(kernel) + 1e-3)
    assert features.model_key(changed) != key
    # The head does not compute features.
    assert features.model_key(twin(model, hidden_dim=4)) == key


def test_changed_data_gives_a_new_entry(tmp_path):
    images, labels = toy_data()
    model = build()
    expected = model.feature_extractor().predict(images, verbose=0)
    options = dict(cache_dir=tmp_path, verbose=0, print_fn=lambda _: None)
    first = features.cache_features(model, batches(images, labels), **options)

    # One pixel of the last image: only its batch runs through the backbone.
    edited = images.copy()
    edited[15, 0, 0, 0] ^= 1
    expected[15] = model.feature_extractor().predict(edited[15:], verbose=0)
    pixel = features.cache_features(model, batches(edited, labels), **options)
    assert pixel.path != first.path and pixel.computed == 4
    np.testing.assert_allclose(pixel.features, expected, atol=1e-5)

    # A relabelled example: a new entry, and no backbone run at all.
    relabelled = labels.copy()
    relabelled[0] = (labels[0] + 1) % NUM_CLASSES
    label = features.cache_features(
        model, batches(images, relabelled), **options
    )
    assert label.path not in (first.path, pixel.path)
    assert label.computed == 0
    np.testing.assert_array_equal(label.labels, relabelled)
    assert len(list(first.path.parent.iterdir())) == 3


def test_shuffled_epochs_resume_to_the_same_head(tmp_path):
    images, labels = toy_data()
    data = batches(images, labels)
    whole, resumed, unshuffled = (build() for _ in range(3))
    for model in (resumed, unshuffled):
        model.set_weights(whole.get_weights())
    for model in (whole, resumed, unshuffled):
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    options = dict(cache_dir=tmp_path, verbose=0, print_fn=lambda _: None)

    head_training.fit_head_cached(
        whole, data, epochs=3, shuffle_seed=7, **options
    )
    head_training.fit_head_cached(
        resumed, data, epochs=1, shuffle_seed=7, **options
    )
    head_training.fit_head_cached(
        resumed, data, initial_epoch=1, epochs=3, shuffle_seed=7, **options
    )
    head_training.fit_head_cached(unshuffled, data, epochs=3, **options)

    head = numpy_weights([whole.output_dense])
    for weight, want in zip(
        numpy_weights([resumed.output_dense]), head, strict=True
    ):
        np.testing.assert_allclose(weight, want, atol=1e-6)
    assert not np.allclose(numpy_weights([unshuffled.output_dense])[0], head[0])


def test_trainable_backbone_is_an_error(tmp_path):
    images, labels = toy_data()
    model = build()
    model.unfreeze_backbone(last_n=1)
    with pytest.raises(ValueError, match="freeze_backbone"):
        head_training.fit_head_cached(
            model, batches(images, labels), epochs=1, cache_dir=tmp_path
        )


def test_batches_without_labels_are_an_error(tmp_path):
    images = tf.data.Dataset.from_tensor_slices(kit.random_images(4))
    with pytest.raises(ValueError, match=r"`\(images, labels\)` batches"):
        features.cache_features(build(), images.batch(2), cache_dir=tmp_path)


# === A damaged cache is rebuilt, never trusted ===


def independent_features(model, images):
    """Backbone + average pooling, without the classifier's own layers."""
    maps = model.backbone(model.image_converter(images), training=False)
    return keras.ops.convert_to_numpy(maps).mean(axis=(1, 2))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_bytes(path):
    # The last bytes are feature values: the file still loads, wrong.
    data = bytearray(path.read_bytes())
    for i in range(1, 9):
        data[-i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_entries_are_rebuilt_and_said_so(tmp_path):
    images, labels = toy_data()
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    # Disjoint splits: each entry is the only source of its images.
    train = batches(images[:12], labels[:12])
    validation = batches(images[12:], labels[12:])
    options = dict(epochs=1, cache_dir=tmp_path, verbose=0)
    head_training.fit_head_cached(
        model, train, validation, print_fn=lambda _: None, **options
    )
    entries = sorted(tmp_path.glob("*/*/features.npy"))
    assert len(entries) == 2
    truncate(entries[0])
    flip_bytes(entries[1])

    lines = []
    history = head_training.fit_head_cached(
        model, train, validation, print_fn=lines.append, **options
    )
    assert np.isfinite(history.history["val_loss"]).all()
    warnings = [line for line in lines if line.startswith("Warning")]
    assert len(warnings) == 1
    assert "2 damaged feature-cache entries" in warnings[0]
    assert "2 rebuilt" in warnings[0]
    assert str(entries[0].parent) in warnings[0]
    assert str(entries[1].parent) in warnings[0]

    expected = independent_features(model, images)
    again = []
    for part, rows in ((train, slice(0, 12)), (validation, slice(12, 16))):
        cached = features.cache_features(
            model, part, cache_dir=tmp_path, verbose=0, print_fn=again.append
        )
        # The rebuilt entries are whole: read back without the backbone.
        assert cached.hit and cached.computed == 0
        np.testing.assert_allclose(cached.features, expected[rows], atol=1e-4)
    assert not any(line.startswith("Warning") for line in again)
    assert sorted(p.name for p in tmp_path.glob("*/*")) == sorted(
        p.parent.name for p in entries
    )


def remove_file(path):
    path.unlink()


def garble(path):
    path.write_text("{not json")


@pytest.mark.parametrize(
    "file_name, damage",
    [
        ("features.npy", truncate),
        ("features.npy", flip_bytes),
        ("images.npy", flip_bytes),
        ("images.npy", remove_file),
        ("meta.json", garble),
    ],
    ids=[
        "truncated",
        "altered",
        "altered-digests",
        "missing-file",
        "unreadable-meta",
    ],
)
def test_each_kind_of_damage_is_rebuilt(file_name, damage, tmp_path):
    images, labels = toy_data(count=8)
    model = build()
    options = dict(cache_dir=tmp_path, verbose=0)
    written = features.cache_features(
        model, batches(images, labels), print_fn=lambda _: None, **options
    )
    damage(written.path / file_name)

    lines = []
    rebuilt = features.cache_features(
        model, batches(images, labels), print_fn=lines.append, **options
    )
    assert not rebuilt.hit and rebuilt.computed == 8
    assert rebuilt.path == written.path
    np.testing.assert_allclose(
        rebuilt.features, independent_features(model, images), atol=1e-4
    )
    assert lines[-1] == (
        "Warning: 1 damaged feature-cache entry (truncated, altered or "
        f"unreadable) was not used: 1 rebuilt ({written.path}). Its "
        "features were computed again from the images; results are "
        "unaffected. If this recurs, check the disk holding the cache."
    )
    later = features.cache_features(
        model, batches(images, labels), print_fn=lines.append, **options
    )
    assert later.hit and later.computed == 0


def test_damaged_entry_of_other_data_is_removed(tmp_path):
    images, labels = toy_data()
    model = build()
    options = dict(cache_dir=tmp_path, verbose=0)
    other = features.cache_features(
        model, batches(images[8:], labels[8:]), print_fn=print, **options
    )
    flip_bytes(other.path / "features.npy")

    lines = []
    # Half of these images are in the damaged entry: they are computed.
    cached = features.cache_features(
        model, batches(images, labels), print_fn=lines.append, **options
    )
    assert cached.computed == 16
    np.testing.assert_allclose(
        cached.features, independent_features(model, images), atol=1e-4
    )
    assert "1 removed" in lines[-1] and str(other.path) in lines[-1]
    assert [p.name for p in cached.path.parent.iterdir()] == [cached.path.name]


def test_two_runs_writing_one_entry_leave_it_whole(tmp_path):
    images, labels = toy_data(count=8)
    model = build()
    data = batches(images, labels)
    quiet = dict(verbose=0, print_fn=lambda _: None)
    # Both runs list the cache before either writes, so both write.
    runs = [features.FeatureCache(model, tmp_path) for _ in range(2)]
    paths = {run.read(data, name="data", **quiet).path for run in runs}
    assert len(paths) == 1
    (entry,) = paths
    # No temporaries or set-aside copies are left next to the entry.
    assert list(entry.parent.iterdir()) == [entry]
    later = features.cache_features(model, data, cache_dir=tmp_path, **quiet)
    assert later.hit and later.computed == 0
    np.testing.assert_allclose(
        later.features, independent_features(model, images), atol=1e-4
    )
