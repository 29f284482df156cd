import json
import pathlib

import keras
import kit
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from kerastl import Stage
from kerastl import TransferClassifier
from kerastl import fine_tune
from kerastl.cli import cli
from kerastl.train.distillation import Distiller

NUM_CLASSES = 3
RECIPE = pathlib.Path(__file__).parents[1] / "recipes" / "cifar10_distill.py"


def classifier(family="resnet", image_size=32, sharpen=1.0, **kwargs):
    """A tiny classifier; `sharpen` scales its head's kernel, as a random
    ResNet head predicts nearly uniform probabilities, on which a wrong
    distillation term would hardly show."""
    backbone, converter = kit.TINY_BACKBONES[family](image_size)
    model = TransferClassifier(
        backbone, NUM_CLASSES, image_converter=converter, **kwargs
    )
    kernel = model.output_dense.kernel
    kernel.assign(kernel * sharpen)
    return model


def color_teacher(image_size=32):
    """A plain Keras model (not a TransferClassifier) from mean colour to
    sharp class probabilities."""
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    init = keras.initializers.RandomNormal(stddev=8.0, seed=1)
    outputs = keras.layers.Dense(
        NUM_CLASSES, activation="softmax", kernel_initializer=init
    )(x)
    return keras.Model(inputs, outputs)


def numpy_of(model, images):
    return model.predict(images, verbose=0).astype(np.float64)


def soften(probs, temperature, multi_label):
    """Probabilities at temperature T, from the probabilities themselves."""
    if multi_label:
        logits = np.log(probs) - np.log1p(-probs)
        return 1 / (1 + np.exp(-logits / temperature))
    tempered = probs ** (1 / temperature)
    return tempered / tempered.sum(axis=-1, keepdims=True)


def expected_loss(labels, student, teacher, alpha, temperature, weights):
    """Hinton et al.'s loss, by hand: alpha * CE + (1 - alpha) * T^2 * KL."""
    multi_label = labels.ndim == 2
    p = np.clip(student, 1e-7, 1 - 1e-7)  # Keras' cross-entropy clipping
    if multi_label:
        ce = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p), -1)
    else:
        ce = -np.log(p[np.arange(len(labels)), labels])
    q_t = soften(teacher, temperature, multi_label)
    q_s = soften(student, temperature, multi_label)
    if multi_label:
        kl = q_t * np.log(q_t / q_s) + (1 - q_t) * np.log((1 - q_t) / (1 - q_s))
        kl = kl.mean(axis=-1)
    else:
        kl = np.sum(q_t * np.log(q_t / q_s), axis=-1)
    # Keras' "sum_over_batch_size": weighted sum over the batch size.
    return alpha * np.mean(weights * ce) + (
        1 - alpha
    ) * temperature**2 * np.mean(weights * kl)


@pytest.mark.parametrize(
    "multi_label, alpha, temperature",
    [(False, 0.3, 4.0), (True, 0.6, 2.0), (False, 1.0, 4.0)],
    # alpha=1: the student's plain cross-entropy, the teacher ignored.
    ids=["multi-class", "multi-label", "alpha-1"],
)
def test_loss_matches_hand_computation(multi_label, alpha, temperature):
    images, labels = kit.color_images(8, NUM_CLASSES)
    student = classifier(sharpen=5.0, multi_label=multi_label)
    if multi_label:
        # A kerastl teacher at another input size: it sees the batch
        # resized to 48x48.
        teacher = classifier("vit", image_size=48, multi_label=True)
        labels = np.random.default_rng(2).integers(0, 2, (8, NUM_CLASSES))
        teacher_images = tf.image.resize(
            images.astype("float32"), (48, 48), antialias=True
        ).numpy()
    else:
        teacher = color_teacher()
        teacher_images = images
    distiller = Distiller(student, teacher, alpha, temperature)
    weights = np.array([1.0, 0.5, 2.0, 0.0, 1.0, 1.0, 3.0, 1.0])

    student_probs = numpy_of(student, images)
    teacher_probs = numpy_of(teacher, teacher_images)
    # The test is only as good as the distributions are far apart.
    assert np.abs(student_probs - teacher_probs).max() > 0.3
    expected = expected_loss(
        labels, student_probs, teacher_probs, alpha, temperature, weights
    )

    loss = distiller.compute_loss(
        x=keras.ops.convert_to_tensor(images),
        y=keras.ops.convert_to_tensor(labels),
        y_pred=student(images, training=False),
        sample_weight=keras.ops.convert_to_tensor(weights, "float32"),
        training=False,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss), expected, rtol=1e-4
    )


def values(weights):
    return [keras.ops.convert_to_numpy(w).copy() for w in weights]


def changed(before, weights):
    return [
        not np.allclose(old, new)
        for old, new in zip(before, values(weights), strict=True)
    ]


def test_fit_trains_the_student_only(tmp_path):
    images, labels = kit.color_images(8, NUM_CLASSES)
    student = classifier()
    # A ResNet teacher: its BatchNorm statistics must not move either.
    teacher = classifier()
    distiller = Distiller(student, teacher)
    trainable = {id(w) for w in distiller.trainable_variables}
    assert trainable == {id(w) for w in student.trainable_variables}
    teacher_before = values(teacher.weights)
    student_before = values(student.trainable_weights)

    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    history = distiller.fit(images, labels, batch_size=4, verbose=0)

    assert set(history.history) == {"loss", "accuracy"}
    assert not any(changed(teacher_before, teacher.weights))
    assert all(changed(student_before, student.trainable_weights))

    # What a Distiller saves is its student.
    distiller.save(tmp_path / "student.keras")
    restored = keras.models.load_model(tmp_path / "student.keras")
    assert type(restored) is TransferClassifier
    for saved, trained in zip(
        restored.get_weights(), student.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(saved, trained)


def test_fine_tune_stages_on_a_distiller():
    images, labels = kit.color_images(16, NUM_CLASSES)
    dataset = kit.ClassifierTestCase.dataset(images, labels)
    student = classifier()
    # Another input size: the teacher's resize runs in the compiled step.
    teacher = classifier("vit", image_size=48)
    distiller = Distiller(student, teacher)
    groups = student.layer_groups()
    before = {group.name: values(group.weights) for group in groups[-2:]} | {
        "head": values(student.output_dense.weights)
    }
    teacher_before = values(teacher.weights)

    stages = [
        Stage(train="head", learning_rate=1e-2, name="head"),
        Stage(
            train=1,
            optimizer="adamw",
            learning_rate=1e-2,
            weight_decay=1e-4,
            layer_decay=0.5,
            name="last",
        ),
    ]
    rows = fine_tune(
        distiller,
        dataset.take(2),
        dataset.take(1),
        stages,
        print_fn=lambda _: None,
        verbose=0,
    )

    # The same log as a plain fit of the student.
    assert [set(row) for row in rows] == 2 * [
        {
            "stage",
            "epoch",
            "learning_rate",
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
        }
    ]
    assert student.trainable_groups == 1
    # The last group trained (stage 2) and the head; the one before never.
    assert not any(changed(before[groups[-2].name], groups[-2].weights))
    trained = [
        w.trainable for w in groups[-1].weights
    ]  # BatchNorm stays frozen
    assert changed(before[groups[-1].name], groups[-1].weights) == trained
    assert all(changed(before["head"], student.output_dense.weights))
    assert not any(changed(teacher_before, teacher.weights))


def test_fit_recipe_with_a_run_directory_teacher(tmp_path):
    preset = tmp_path / "resnet_preset"
    kit.save_tiny_preset("resnet", preset)
    # A folder of runs, as `kerastl fit` leaves under runs/<name>: the
    # newest run's model is the teacher. CIFAR-10 has 10 classes.
    runs = tmp_path / "runs" / "teacher"
    backbone, converter = kit.tiny_vit()
    for stamp in ("20260101-000000", "20260102-000000"):
        teacher = TransferClassifier(backbone, 10, image_converter=converter)
        (runs / stamp).mkdir(parents=True)
        teacher.save(runs / stamp / "model.keras")

    result = CliRunner().invoke(
        cli,
        [
            "fit",
            str(RECIPE),
            "--smoke",
            "--output-dir",
            str(tmp_path / "run"),
            "--set",
            f"preset={preset}",
            "--set",
            f"teacher={runs}",
            "--set",
            "distill_alpha=0.25",
        ],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    newest = runs / "20260102-000000" / "model.keras"
    assert f"Distillation: teacher {newest}, alpha 0.25" in result.output
    saved = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert type(saved) is TransferClassifier
    assert saved.backbone.__class__.__name__ == "ResNetBackbone"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "accuracy" in metrics["splits"]["validation"]


def test_teacher_of_other_classes_is_a_clear_error():
    student = classifier()
    backbone, converter = kit.tiny_vit()
    teacher = TransferClassifier(backbone, 5, image_converter=converter)
    with pytest.raises(ValueError, match="teacher predicts 5 classes but"):
        Distiller(student, teacher)


@pytest.mark.parametrize(
    "teacher_kwargs, student_kwargs, message",
    [
        (dict(multi_label=True), {}, "both be multi-label"),
        (
            dict(class_names=["a", "b", "c"]),
            dict(class_names=["a", "c", "b"]),
            "classes differ from the student",
        ),
    ],
    ids=["multi-label", "class-order"],
)
def test_incompatible_teachers_are_clear_errors(
    teacher_kwargs, student_kwargs, message
):
    student = classifier(**student_kwargs)
    teacher = classifier("vit", **teacher_kwargs)
    with pytest.raises(ValueError, match=message):
        Distiller(student, teacher)


@pytest.mark.parametrize(
    "alpha, temperature, message",
    [(1.5, 4.0, "lies in \\[0, 1\\]"), (0.5, 0.0, "must be positive")],
    ids=["alpha", "temperature"],
)
def test_bad_arguments_are_clear_errors(alpha, temperature, message):
    with pytest.raises(ValueError, match=message):
        Distiller(classifier(), color_teacher(), alpha, temperature)
