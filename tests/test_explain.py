"""Saliency maps (`kerastl.explain`, `kerastl explain`, the report's row).

Checked against what is known independently: Grad-CAM of a global-average
pooled linear head is the class activation map (Zhou et al. 2016); a ViT's
Grad-CAM and attention rollout against transformers' own gradients and
attention weights; rollout on a hand-worked case; and, on coloured squares
whose position alone carries the class, that a trained model's maps peak
inside the square while a model trained on shuffled labels' do not.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import kit
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

import kerastl
from kerastl import TransferClassifier
from kerastl.cli import cli
from kerastl.data.synthetic import square_images
from kerastl.evaluate import metrics
from kerastl.evaluate import report
from kerastl.models import standins
from kerastl.utils import autodiff

KERASTL = pathlib.Path(sys.executable).parent / "kerastl"
SIZE = 64
SQUARE = 16
CLASSES = ["red", "green", "blue"]
# Enough to learn the squares on every backend (held-out accuracy 0.99 to
# 1.0, 97-100% of maps in the square), in 6-12 s for both models.
TRAIN_IMAGES, EPOCHS = 400, 5


def _resize(maps, size):
    """Bilinear resize by TensorFlow: the reference for `upsample`."""
    resized = tf.image.resize(np.asarray(maps)[..., None], size, "bilinear")
    return resized.numpy()[..., 0].astype(np.float64)


def _normalize(maps):
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return (maps - low) / np.where(span > 0, span, 1)


def _square_model(shuffle_labels):
    """A tiny ResNet trained from scratch on coloured squares."""
    images, labels, _ = square_images(TRAIN_IMAGES, image_size=SIZE, seed=1)
    if shuffle_labels:
        labels = np.random.default_rng(0).permutation(labels)
    backbone = standins.tiny_backbone(
        "resnet",
        SIZE,
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32, 32],
        stackwise_num_blocks=[1, 1, 1],
        # Stride 4 in the stem only: a 16x16 feature map, fine enough to
        # tell a 16-pixel square from its neighbourhood.
        stackwise_num_strides=[1, 1, 1],
        block_type="basic_block",
    )
    model = TransferClassifier(
        backbone,
        len(CLASSES),
        standins.imagenet_converter(SIZE),
        class_names=CLASSES,
    )
    model.fit(images, labels, epochs=EPOCHS, batch_size=32, verbose=0)
    return model


def _inside(heatmaps, corners):
    """Whether each map's maximum lies inside its image's square."""
    flat = heatmaps.reshape(len(heatmaps), -1).argmax(axis=1)
    rows, columns = np.unravel_index(flat, heatmaps.shape[1:])
    return (
        (rows >= corners[:, 0])
        & (rows < corners[:, 0] + SQUARE)
        & (columns >= corners[:, 1])
        & (columns < corners[:, 1] + SQUARE)
    )


@pytest.fixture(scope="module")
def squares():
    keras.utils.set_random_seed(0)
    return _square_model(False), _square_model(True)


@pytest.fixture(scope="module")
def held_out():
    return square_images(100, image_size=SIZE, seed=2)


# === Localisation ===


def test_gradcam_peaks_inside_the_square_and_shuffled_labels_do_not(
    squares, held_out
):
    trained, shuffled = squares
    images, labels, corners = held_out
    accuracy = (trained.predict(images, verbose=0).argmax(1) == labels).mean()
    assert accuracy >= 0.95
    hits = _inside(kerastl.explain.gradcam(trained, images), corners).mean()
    control = _inside(kerastl.explain.gradcam(shuffled, images), corners).mean()
    assert hits >= 0.9, f"trained: {hits:.2f} of maps peak in the square"
    assert control < 0.9, f"shuffled labels: {control:.2f} peak in it too"


def test_gradcam_of_the_true_class_is_the_default_when_predicted(
    squares, held_out
):
    trained, _ = squares
    images, labels, _ = held_out
    default = kerastl.explain.gradcam(trained, images[:8])
    explicit = kerastl.explain.gradcam(
        trained, images[:8], class_index=labels[:8]
    )
    np.testing.assert_allclose(default, explicit, atol=1e-6)


def test_a_preset_in_mixed_precision_looks_at_the_same_place(
    squares, held_out, tmp_path
):
    trained, _ = squares
    images, _, corners = held_out
    trained.save_to_preset(tmp_path / "squares")
    mixed = TransferClassifier.from_preset(
        tmp_path / "squares", dtype="mixed_bfloat16"
    )
    assert mixed.backbone.compute_dtype == "bfloat16"
    full = kerastl.explain.gradcam(trained, images)
    half = kerastl.explain.gradcam(mixed, images)
    assert _inside(half, corners).mean() >= 0.9
    # bfloat16 keeps 8 bits of mantissa: the maps agree in shape, not to
    # float32 precision.
    correlation = np.corrcoef(full.ravel(), half.ravel())[0, 1]
    assert correlation > 0.95


# === Against independent computations ===


def test_gradcam_of_an_average_pooled_linear_head_is_the_cam():
    backbone, converter = kit.tiny_resnet()
    model = TransferClassifier(backbone, 4, converter, activation=None)
    model.set_temperature(2.5)  # divides the logits: the map is the same
    images = kit.random_images(6)
    feature_map = keras.ops.convert_to_numpy(
        backbone(converter(images.astype("float32")))
    ).astype(np.float64)
    kernel = keras.ops.convert_to_numpy(model.output_dense.kernel)
    classes = np.array([0, 1, 2, 3, 0, 1])
    # d(logit_c)/dA = W[:, c] / (h * w) at every position, so Grad-CAM is
    # ReLU(sum_k W[k, c] A_k) up to a positive factor (Zhou et al.'s CAM).
    cam = np.einsum("bhwk,kb->bhw", feature_map, kernel[:, classes])
    expected = _normalize(_resize(np.maximum(cam, 0), model.image_size))
    heatmaps = kerastl.explain.gradcam(model, images, class_index=classes)
    assert heatmaps.shape == (6, *model.image_size)
    assert heatmaps.dtype == np.float32
    np.testing.assert_allclose(heatmaps, expected, atol=1e-4)


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    """A 2-block transformers ViT, its kerastl classifier and test images."""
    import torch

    path = tmp_path_factory.mktemp("hf") / "vit"
    hf_model, processor = kit.write_hf_checkpoint("vit", path)
    hf_model.set_attn_implementation("eager")
    keras.utils.set_random_seed(0)
    model = TransferClassifier.from_preset(path, num_classes=3)
    images = kit.random_images(4)
    pixels = processor(images=list(images), return_tensors="pt")
    with torch.no_grad():
        outputs = hf_model(
            **pixels, output_attentions=True, output_hidden_states=True
        )
    return hf_model, pixels["pixel_values"], outputs, model, images


def test_rollout_of_a_two_block_vit_matches_transformers_attention(hf_vit):
    _, _, outputs, model, images = hf_vit
    # Rollout by hand from transformers' own attention weights: mean over
    # heads, add the identity, renormalize, multiply first to last, read
    # the class token's row over the 4x4 patches.
    rolled = np.eye(outputs.attentions[0].shape[-1])
    for weights in outputs.attentions:
        fused = weights.numpy().astype(np.float64).mean(axis=1)
        fused = (fused + np.eye(fused.shape[-1])) / 2
        fused /= fused.sum(axis=-1, keepdims=True)
        rolled = fused @ rolled
    patches = rolled[:, 0, 1:].reshape(-1, 4, 4)
    expected = _normalize(_resize(patches, model.image_size))
    heatmaps = kerastl.explain.rollout(model, images)
    np.testing.assert_allclose(heatmaps, expected, atol=1e-4)


def test_vit_gradcam_matches_transformers_gradients(hf_vit):
    import torch

    hf_model, pixels, _, model, images = hf_vit
    kernel = torch.tensor(keras.ops.convert_to_numpy(model.output_dense.kernel))
    bias = torch.tensor(keras.ops.convert_to_numpy(model.output_dense.bias))
    # The same head on transformers' outputs: the class token after the
    # final LayerNorm, then the Dense layer.
    outputs = hf_model(pixel_values=pixels, output_hidden_states=True)
    logits = outputs.last_hidden_state[:, 0] @ kernel + bias
    classes = logits.argmax(axis=1)
    # The tokens entering the last of the two blocks.
    tokens = outputs.hidden_states[-2]
    (grads,) = torch.autograd.grad(
        logits.gather(1, classes[:, None]).sum(), tokens
    )
    tokens = tokens.detach().numpy()[:, 1:].reshape(-1, 4, 4, 16)
    grads = grads.numpy()[:, 1:].reshape(-1, 4, 4, 16)
    weights = grads.mean(axis=(1, 2))
    cam = np.maximum(np.einsum("bhwk,bk->bhw", tokens, weights), 0)
    expected = _normalize(_resize(cam, model.image_size))
    heatmaps = kerastl.explain.gradcam(model, images)
    np.testing.assert_allclose(heatmaps, expected, atol=1e-4)


def test_rollout_matrix_by_hand():
    first = np.array([[[[0.5, 0.5], [0.5, 0.5]]]])
    # Two heads averaging to [[0.2, 0.8], [0.6, 0.4]].
    second = np.array([[[[0.4, 0.6], [0.6, 0.4]], [[0.0, 1.0], [0.6, 0.4]]]])
    # (A + I) / 2: [[.75, .25], [.25, .75]] and [[.6, .4], [.3, .7]];
    # second times first: [[.55, .45], [.4, .6]].
    rolled = kerastl.explain.rollout_matrix([first, second])
    np.testing.assert_allclose(rolled, [[[0.55, 0.45], [0.4, 0.6]]])
    # Max fusion: [[0.4, 1.0], [0.6, 0.4]], rows then normalized:
    # ([[1.4, 1.0], [0.6, 1.4]] / 2) / row sums = [[7/12, 5/12], [.3, .7]].
    rolled = kerastl.explain.rollout_matrix([second], head_fusion="max")
    np.testing.assert_allclose(rolled, [[[7 / 12, 5 / 12], [0.3, 0.7]]])
    # Discarding the weakest half of [[0.8, 0.2], [0.6, 0.4]] zeroes 0.2
    # and 0.4: [[0.9, 0], [0.3, 0.5]] after adding I and halving, rows
    # normalized: [[1, 0], [0.375, 0.625]].
    weights = np.array([[[[0.8, 0.2], [0.6, 0.4]]]])
    discarded = kerastl.explain.rollout_matrix([weights], discard_ratio=0.5)
    np.testing.assert_allclose(discarded, [[[1.0, 0.0], [0.375, 0.625]]])
    # The class token's attention to itself is never discarded.
    weights = np.array([[[[0.1, 0.9], [0.6, 0.4]]]])
    kept = kerastl.explain.rollout_matrix([weights], discard_ratio=0.25)
    np.testing.assert_allclose(kept, [[[0.55, 0.45], [0.3, 0.7]]])


def test_upsample_matches_tensorflow_bilinear_resize():
    maps = np.random.default_rng(0).random((3, 5, 7))
    for size in ((20, 28), (13, 9), (5, 7)):
        np.testing.assert_allclose(
            kerastl.explain.upsample(maps, size), _resize(maps, size), atol=1e-6
        )


def test_gradient_helper_differentiates_a_dense_layer():
    dense = keras.layers.Dense(2)
    x = np.array([[1.0, 2.0, 3.0]], dtype="float32")
    dense.build(x.shape)
    value, grad = autodiff.value_and_gradient(
        lambda t: keras.ops.sum(dense(t) ** 2), x
    )
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    out = x @ kernel + keras.ops.convert_to_numpy(dense.bias)
    assert value == pytest.approx(float((out**2).sum()), rel=1e-5)
    np.testing.assert_allclose(grad, 2 * out @ kernel.T, rtol=1e-5)


# === Every family ===


# ResNet (a feature map) and ViT (a class token, blocks) run everywhere.
# The other families reach the same backend code as these two and differ
# only in NumPy: DeiT's distillation token, DINOv2's registers and dict
# input, EfficientNet's feature map, Swin's grid of output tokens. They run
# on one backend (on JAX, compiling Swin's eager operations takes 17 s).
ONE_BACKEND = pytest.mark.backends(
    "torch", reason="the same code path as a family tested on every backend"
)


@pytest.mark.parametrize(
    "family",
    [
        "resnet",
        "vit",
        pytest.param("deit", marks=ONE_BACKEND),
        pytest.param("dinov2", marks=ONE_BACKEND),
        pytest.param("efficientnet", marks=ONE_BACKEND),
        pytest.param("swin", marks=ONE_BACKEND),
    ],
)
def test_gradcam_runs_on_every_kind_of_backbone(family):
    # DINOv2 patches are 14 pixels; Swin's 7x7 windows need 224.
    size = {"dinov2": 56, "swin": 224}.get(family, 64)
    backbone = standins.tiny_backbone(family, size)
    model = TransferClassifier(backbone, 3, standins.imagenet_converter(size))
    heatmaps = kerastl.explain.gradcam(model, kit.random_images(3, size))
    assert heatmaps.shape == (3, size, size)
    assert np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0 and heatmaps.max() == pytest.approx(1.0)
    if family in ("vit", "deit", "dinov2"):
        images = kit.random_images(3, size)
        rolled = kerastl.explain.rollout(model, images)
        assert rolled.shape == (3, size, size)
        assert rolled.max() == pytest.approx(1.0)
        # Rollout is the default where it works (it localises better).
        assert kerastl.explain.default_method(model) == "rollout"
        np.testing.assert_array_equal(
            kerastl.explain.explain(model, images), rolled
        )
    else:
        assert kerastl.explain.default_method(model) == "gradcam"


def test_rollout_of_a_convnet_says_to_use_gradcam():
    backbone, converter = kit.tiny_resnet()
    model = TransferClassifier(backbone, 3, converter)
    with pytest.raises(ValueError, match="method='gradcam'"):
        kerastl.explain.rollout(model, kit.random_images(2))
    with pytest.raises(ValueError, match="takes no class"):
        kerastl.explain.explain(
            model, kit.random_images(2), method="rollout", class_index=1
        )


def test_images_of_the_wrong_size_are_refused_with_the_fix():
    backbone, converter = kit.tiny_resnet()
    model = TransferClassifier(backbone, 3, converter)
    with pytest.raises(ValueError, match="center_crop_resize"):
        kerastl.explain.gradcam(model, kit.random_images(2, 40))
    with pytest.raises(ValueError, match="class_index"):
        kerastl.explain.gradcam(model, kit.random_images(2), class_index=3)


def test_multi_label_maps_every_class_over_its_threshold():
    backbone, converter = kit.tiny_resnet()
    model = TransferClassifier(
        backbone,
        4,
        converter,
        multi_label=True,
        thresholds=[0.5, 0.5, 0.9, 0.2],
    )
    probs = np.array(
        [
            [0.6, 0.7, 0.8, 0.1],  # 2 is under its 0.9; most probable first
            [0.1, 0.2, 0.3, 0.1],  # none over: the most probable
            [0.9, 0.8, 0.95, 0.3],  # four over, three kept
        ]
    )
    assert kerastl.explain.classes_to_explain(model, probs) == [
        [1, 0],
        [2],
        [2, 0, 1],
    ]


# === The report and the command ===


def test_the_mistakes_figure_shows_a_map_under_each_mistake(
    squares, held_out, tmp_path
):
    _, shuffled = squares
    images, labels, _ = held_out
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    predictions = metrics.predict_split(shuffled, dataset)
    assert len(predictions.mistakes) == 16
    result = report.evaluate_split(shuffled, predictions, "test", tmp_path, "p")
    figure = tmp_path / result.plots["test: most confidently wrong"]
    # 16 stacks of an image and its map: 6 per band (about square), three
    # bands of two rows; 2.6 x 2.8 inches a cell plus the title, 100 dpi.
    with Image.open(figure) as drawn:
        assert drawn.size == (6 * 260, 6 * 280 + 40)


def _write_square_folders(root):
    # Twice the model's size: `kerastl explain` shrinks them to what the
    # model learned on (16-pixel squares on 64-pixel images).
    images, labels, corners = square_images(
        9, image_size=2 * SIZE, square_size=2 * SQUARE, seed=3
    )
    truth = {}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"carré {i} ü.jpg" if i % 2 else f"square {i}.png"
        Image.fromarray(image).save(folder / name, quality=95)
        truth[str(folder / name)] = (CLASSES[label], corners[i])
    (root / "red" / "notes.jpg").write_text("not a photo")
    return truth


def test_explain_command_writes_maps_that_find_the_squares(squares, tmp_path):
    trained, _ = squares
    trained.save(tmp_path / "squares.keras")
    photos = tmp_path / "fotos ñ"
    truth = _write_square_folders(photos)
    done = subprocess.run(
        [
            str(KERASTL),
            "explain",
            str(tmp_path / "squares.keras"),
            str(photos),
            "--output-dir",
            str(tmp_path / "maps"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": keras.config.backend()},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    page = tmp_path / "maps" / "explanations_001.png"
    assert str(page) in done.stdout
    assert "notes.jpg: not an image" in done.stdout
    assert "Traceback" not in done.stderr and "W0000" not in done.stderr
    result = json.loads((tmp_path / "maps" / "explanations.json").read_text())
    assert result["method"] == "gradcam"
    explained = {item["path"]: item for item in result["images"]}
    assert explained[str(photos / "red" / "notes.jpg")]["error"]
    for path, (label, corner) in truth.items():
        item = explained[path]
        assert item["true"] == label
        assert item["predictions"][0]["class"] == label
        (heat,) = item["maps"]
        assert heat["class"] == label and heat["page"] == 1
        # In the photo's pixels: twice the model's.
        row, column = 2 * np.array(heat["peak"])
        assert corner[0] - 1 <= row <= corner[0] + 2 * SQUARE
        assert corner[1] - 1 <= column <= corner[1] + 2 * SQUARE
    with Image.open(page) as drawn:
        # Nine stacks of an image and its map: 5 per band, two bands.
        assert drawn.size == (5 * 260, 4 * 280 + 40)


@pytest.mark.backends(
    "torch", reason="the checks run before any map; the same on every backend"
)
def test_explain_command_refuses_with_a_reason(squares, tmp_path):
    trained, _ = squares
    trained.save(tmp_path / "squares.keras")
    photos = tmp_path / "photos"
    _write_square_folders(photos)
    before = sorted(p.name for p in photos.rglob("*"))

    def run(*args):
        # In this process: the command's own process, imports and console
        # are tested above.
        model = str(tmp_path / "squares.keras")
        done = CliRunner().invoke(cli, ["explain", model, *args])
        assert done.exit_code == 1, done.output
        assert "Traceback" not in done.output
        return " ".join(done.output.split())

    assert "Did you mean red?" in run(str(photos), "--class", "redd")
    assert "Use --method gradcam" in run(
        str(photos), "--method", "rollout", "--class", "red"
    )
    assert "method='gradcam'" in run(str(photos), "--method", "rollout")
    assert "lies inside the images explained" in run(
        str(photos), "--output-dir", str(photos / "maps")
    )
    assert sorted(p.name for p in photos.rglob("*")) == before
