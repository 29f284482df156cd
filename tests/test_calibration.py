import keras
import kit
import numpy as np
import pytest
from scipy import special
from sklearn import metrics

from kerastl import TransferClassifier
from kerastl.evaluate import calibration
from kerastl.models import decisions


def test_ece_hand_worked_multi_class():
    # Top-1 confidences 0.9 (right), 0.78 (wrong), 0.72 (right), 0.5
    # (right) in five bins of width 0.2: bin (0.8, 1] has gap |1 - 0.9|,
    # bin (0.6, 0.8] holds two with confidence 0.75 and accuracy 0.5, bin
    # (0.4, 0.6] has gap |1 - 0.5|. ECE = (0.1 + 2 * 0.25 + 0.5) / 4.
    probs = np.array([[0.9, 0.1], [0.78, 0.22], [0.28, 0.72], [0.5, 0.5]])
    labels = np.array([0, 1, 1, 0])
    ece = calibration.expected_calibration_error(
        labels, probs, multi_label=False, num_bins=5
    )
    assert ece == pytest.approx(0.275)
    conf, acc, counts = calibration.reliability_bins(
        *calibration.confidence_and_correctness(labels, probs, False),
        num_bins=5,
    )
    np.testing.assert_array_equal(counts, [0, 0, 1, 2, 1])
    np.testing.assert_allclose(conf[2:], [0.5, 0.75, 0.9])
    np.testing.assert_allclose(acc[2:], [1.0, 0.5, 1.0])
    assert np.isnan(conf[0]) and np.isnan(acc[1])


def test_ece_hand_worked_multi_label():
    # Every (image, class) probability is one binary prediction: 0.9 and
    # 0.7 (positives) land in bin (0.5, 1] with accuracy 1, confidence 0.8;
    # 0.2 (negative) and 0.4 (positive) in [0, 0.5] with accuracy 0.5,
    # confidence 0.3. ECE = (2 * 0.2 + 2 * 0.2) / 4.
    probs = np.array([[0.9, 0.2], [0.4, 0.7]])
    labels = np.array([[1, 0], [1, 1]])
    ece = calibration.expected_calibration_error(
        labels, probs, multi_label=True, num_bins=2
    )
    assert ece == pytest.approx(0.2)


def test_perfectly_calibrated_predictions_have_small_ece():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    correct = rng.uniform(size=20000) < confidence
    probs = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.where(correct, 0, 1)
    assert calibration.expected_calibration_error(labels, probs, False) < 0.02


def _sampled(temperature, multi_label, n=4000, classes=4, seed=0):
    """Logits and labels drawn from activation(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, classes))
    if multi_label:
        labels = rng.uniform(size=logits.shape) < special.expit(
            logits / temperature
        )
        return logits, labels.astype(int)
    probs = special.softmax(logits / temperature, axis=1)
    labels = np.array([rng.choice(classes, p=row) for row in probs])
    return logits, labels


@pytest.mark.parametrize("multi_label", [False, True])
def test_nll_matches_scikit_learn(multi_label):
    logits, labels = _sampled(2.0, multi_label, n=300)
    ours = calibration.negative_log_likelihood(
        labels, logits, multi_label, temperature=1.5
    )
    if multi_label:
        probs = special.expit(logits / 1.5)
        expected = np.mean(
            [
                metrics.log_loss(labels[:, c], probs[:, c], labels=[0, 1])
                for c in range(labels.shape[1])
            ]
        )
    else:
        probs = special.softmax(logits / 1.5, axis=1)
        expected = metrics.log_loss(labels, probs, labels=range(4))
    assert ours == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_recovers_the_sampling_temperature(
    multi_label, true_temperature
):
    logits, labels = _sampled(true_temperature, multi_label)
    fitted = calibration.fit_temperature(labels, logits, multi_label)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    # And it is the minimum: nudging it either way costs likelihood.
    nll = calibration.negative_log_likelihood
    best = nll(labels, logits, multi_label, fitted)
    assert best <= nll(labels, logits, multi_label, fitted * 1.05)
    assert best <= nll(labels, logits, multi_label, fitted / 1.05)


def test_bad_temperature_is_a_clear_error():
    for bad in (0, -1.0, float("nan"), "2", True):
        with pytest.raises(ValueError, match="positive number"):
            decisions.check_temperature(bad)


def _model(multi_label=False, **kwargs):
    backbone, converter = kit.tiny_resnet()
    return TransferClassifier(
        backbone,
        num_classes=3,
        image_converter=converter,
        multi_label=multi_label,
        **kwargs,
    )


@pytest.mark.parametrize("multi_label", [False, True])
def test_model_divides_its_logits_by_the_temperature(multi_label):
    model = _model(multi_label)
    images = kit.random_images(4)
    # Predict once first: the compiled function must not keep 1.0.
    model.predict(images, verbose=0)
    model.set_temperature(2.5)
    logits = keras.ops.convert_to_numpy(
        model.logits_model().predict(images, verbose=0)
    )
    activation = special.expit if multi_label else special.softmax
    expected = (
        activation(logits / 2.5)
        if multi_label
        else activation(logits / 2.5, axis=1)
    )
    np.testing.assert_allclose(
        model.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.predict_on_batch(images)),
        expected,
        rtol=1e-5,
        atol=1e-6,
    )


def test_temperature_and_thresholds_are_saved(tmp_path):
    model = _model(
        True,
        temperature=1.7,
        thresholds=[0.2, 0.5, 0.8],
        class_names=["a", "b", "c"],
    )
    assert model.get_config()["temperature"] == 1.7
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.temperature == 1.7
    assert loaded.thresholds == [0.2, 0.5, 0.8]
    images = kit.random_images(3)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0),
        model.predict(images, verbose=0),
        atol=1e-6,
    )
    model.save_to_preset(tmp_path / "preset")
    restored = TransferClassifier.from_preset(tmp_path / "preset")
    assert restored.temperature == 1.7
    assert restored.thresholds == [0.2, 0.5, 0.8]
    # A new head (other classes) has new logits: neither carries over.
    fresh = TransferClassifier.from_preset(
        tmp_path / "preset", class_names=["x", "y", "z"]
    )
    assert fresh.temperature == 1.0
    assert fresh.thresholds is None
