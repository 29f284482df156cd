"""Label smoothing, MixUp, CutMix and EMA of weights."""

import json

import keras
import kit
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import kerastl
from kerastl import Stage
from kerastl import TransferClassifier
from kerastl.cli import cli
from kerastl.data import mixing
from kerastl.models.losses import SoftTargetAccuracy
from kerastl.models.losses import SoftTargetCrossentropy

PROBS = np.array(
    [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]], "float32"
)
LABELS = np.array([0, 2, 0])


def cross_entropy(targets, probs):
    return np.mean(-np.sum(targets * np.log(probs), axis=-1))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_target_crossentropy_by_hand(smoothing):
    one_hot = np.eye(3)[LABELS]
    smoothed = one_hot * (1 - smoothing) + smoothing / 3
    loss = SoftTargetCrossentropy(label_smoothing=smoothing)
    expected = cross_entropy(smoothed, PROBS)
    np.testing.assert_allclose(float(loss(LABELS, PROBS)), expected, rtol=1e-5)
    # (B, 1) integer labels, as Keras' sparse losses also take.
    np.testing.assert_allclose(
        float(loss(LABELS[:, None], PROBS)), expected, rtol=1e-5
    )
    soft = np.array([[0.6, 0.4, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        float(loss(soft, PROBS)),
        cross_entropy(soft * (1 - smoothing) + smoothing / 3, PROBS),
        rtol=1e-5,
    )
    logits = np.log(PROBS) + 1.5
    from_logits = SoftTargetCrossentropy(
        from_logits=True, label_smoothing=smoothing
    )
    np.testing.assert_allclose(
        float(from_logits(LABELS, logits)), expected, rtol=1e-5
    )


def test_soft_target_accuracy_by_hand():
    metric = SoftTargetAccuracy()
    metric.update_state(LABELS, PROBS)  # right, right, wrong
    metric.update_state(
        np.array([[0.2, 0.8, 0.0], [0.9, 0.1, 0.0], [0.0, 0.4, 0.6]]), PROBS
    )  # wrong, wrong, wrong
    assert float(metric.result()) == pytest.approx(2 / 6)


def test_bad_label_smoothing_is_refused():
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftTargetCrossentropy(label_smoothing=1.0)


def model(num_classes=3, multi_label=False):
    keras.utils.set_random_seed(0)
    backbone, converter = kit.tiny_resnet()
    return TransferClassifier(
        backbone,
        num_classes=num_classes,
        multi_label=multi_label,
        image_converter=converter,
    )


def test_compile_with_label_smoothing_matches_numpy():
    classifier = model()
    classifier.compile(label_smoothing=0.2)
    images, labels = kit.color_images(8, num_classes=3)
    probs = classifier.predict(images, verbose=0)
    smoothed = np.eye(3)[labels] * 0.8 + 0.2 / 3
    loss, accuracy = classifier.evaluate(images, labels, verbose=0)
    assert loss == pytest.approx(cross_entropy(smoothed, probs), rel=1e-4)
    assert accuracy == pytest.approx(np.mean(probs.argmax(-1) == labels))


def mix(images, labels, *, mixup=0.0, cutmix=0.0, seed=0):
    """One batch of `images` through `mix_batches`."""
    dataset = tf.data.Dataset.from_tensor_slices(
        (images.astype("float32"), labels)
    ).batch(len(images))
    multi_label = labels.ndim == 2
    return mixing.mix_batches(
        dataset,
        mixup=mixup,
        cutmix=cutmix,
        num_classes=labels.shape[1] if multi_label else int(labels.max()) + 1,
        multi_label=multi_label,
        seed=seed,
    )


def test_mixup_blends_images_and_labels_by_one_lambda():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, 8, 8, 3))
    labels = np.arange(6, dtype="int32")  # one class per image
    mixed = mix(images, labels, mixup=0.4, seed=1)
    out_images, out_labels = (t.numpy() for t in next(iter(mixed)))
    np.testing.assert_allclose(out_labels.sum(-1), 1.0, rtol=1e-6)
    lams = []
    for i in range(6):
        own = out_labels[i, i]
        others = [j for j in np.flatnonzero(out_labels[i]) if j != i]
        partner = others[0] if others else i
        lam = own if others else 1.0
        lams.append(lam)
        expected = lam * images[i] + (1 - lam) * images[partner]
        np.testing.assert_allclose(out_images[i], expected, rtol=1e-4)
    # One lambda per batch (or its mirror for the partner's row).
    assert len({round(min(lam, 1 - lam), 5) for lam in lams if lam < 1}) <= 1


def test_cutmix_pastes_a_box_whose_area_mixes_the_labels():
    rng = np.random.default_rng(0)
    images = rng.uniform(1, 255, (4, 16, 16, 3)).astype("float32")
    labels = np.arange(4, dtype="int32")
    mixed = mix(images, labels, cutmix=1.0, seed=3)
    for out_images, out_labels in mixed.repeat(3):
        out_images, out_labels = out_images.numpy(), out_labels.numpy()
        for i in range(4):
            partner = [j for j in np.flatnonzero(out_labels[i]) if j != i]
            if not partner:
                np.testing.assert_allclose(out_images[i], images[i])
                continue
            j = partner[0]
            from_partner = np.all(out_images[i] == images[j], axis=-1)
            from_self = np.all(out_images[i] == images[i], axis=-1)
            assert np.all(from_partner | from_self)
            # The pasted region is a box ...
            rows = np.flatnonzero(from_partner.any(1))
            cols = np.flatnonzero(from_partner.any(0))
            assert from_partner[
                rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1
            ].all()
            # ... and the label weight is its share of the image.
            assert out_labels[i, j] == pytest.approx(from_partner.mean())


def test_mixing_multi_hot_labels_and_new_draws_each_epoch():
    images = np.zeros((4, 8, 8, 3))
    labels = np.array(
        [[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype="float32"
    )
    mixed = mix(images, labels, mixup=1.0, cutmix=1.0)
    first = next(iter(mixed))[1].numpy()
    second = next(iter(mixed))[1].numpy()
    assert first.min() >= 0 and first.max() <= 1
    assert not np.allclose(first, second)
    again = mix(images, labels, mixup=1.0, cutmix=1.0)
    np.testing.assert_allclose(next(iter(again))[1].numpy(), first)


def test_ema_weights_are_the_moving_average_of_the_trajectory():
    classifier = model()
    images, labels = kit.color_images(16, num_classes=3)
    train = kit.ClassifierTestCase.dataset(images, labels, batch_size=4)
    kernel = classifier.get_layer("predictions").kernel
    trajectory = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if hasattr(self.model, "jax_state_sync"):
                # JAX keeps the weights outside the variables during an
                # epoch; this writes them back.
                self.model.jax_state_sync()
            trajectory.append(keras.ops.convert_to_numpy(kernel).copy())

    stage = Stage(
        epochs=2, optimizer="sgd", momentum=0.0, learning_rate=0.1, ema=0.9
    )
    rows = kerastl.fine_tune(
        classifier,
        train,
        train,
        [stage],
        callbacks=[Record()],
        print_fn=lambda _: None,
        verbose=0,
    )
    # Keras starts the average at the first step's weights.
    average = trajectory[0]
    for weights in trajectory[1:]:
        average = 0.9 * average + 0.1 * weights
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(kernel), average, rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(average, trajectory[-1])
    # Validation during the stage used the averaged weights too.
    val_loss, _ = classifier.evaluate(train, verbose=0)
    assert rows[-1]["val_loss"] == pytest.approx(val_loss, rel=1e-5)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "resnet_tiny"
    kit.save_tiny_preset("resnet", path)
    return path


def test_recipe_with_every_regularizer_runs(tmp_path, tiny_preset):
    recipe = testing_recipe = tmp_path / "recipe.py"
    testing_recipe.write_text(
        "from kerastl import Recipe, Stage\n"
        "from kerastl.data import Augment, DataSpec\n"
        "recipe = Recipe(name='reg', preset='unused', data=DataSpec("
        "'tfds', 'cifar10', test='test'), augment=Augment(mixup=0.2, "
        "cutmix=1.0), label_smoothing=0.1, stages=("
        "Stage(epochs=1, ema=0.9), Stage(epochs=1, train='all')))\n"
    )
    result = CliRunner().invoke(
        cli,
        [
            "fit",
            str(recipe),
            "--smoke",
            "--output-dir",
            str(tmp_path / "run"),
            "--set",
            f"preset={tiny_preset}",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["splits"]["test"]["accuracy"] <= 1.0
    reloaded = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert isinstance(reloaded.loss, SoftTargetCrossentropy)
    assert reloaded.loss.label_smoothing == pytest.approx(0.1)
