import json
import random

import keras
import kit
import numpy as np
import pytest

from kerastl import TransferClassifier
from kerastl.models import backbones
from kerastl.models import standins
from kerastl.utils import cache

# The real presets' image_converter.json, as keras-hub writes it from the
# source checkpoint's config: `scale = 1 / (255 * std)`, `offset = -mean /
# std`. ResNet-50 (timm resnet50.a1_in1k) and DeiT (facebook/deit-*): ImageNet
# mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), bicubic. ViT
# (google/vit-*): mean = std = 0.5, bilinear.
IMAGENET_SCALE = [0.017124753831663668, 0.01750700280112045, 0.01742919389978]
IMAGENET_OFFSET = [-2.1179039301310043, -2.0357142857142856, -1.80444444444444]
MINUS_ONE_TO_ONE_SCALE = [0.00784313725490196] * 3
MINUS_ONE_TO_ONE_OFFSET = [-1.0] * 3

# A stand-in is tiny: ResNet-50 has 23.6M weights, DeiT-Tiny 5.5M.
MAX_PARAMS = 200_000


def _backbone_weights(path):
    model = TransferClassifier.from_preset(path, num_classes=3)
    return [keras.ops.convert_to_numpy(w) for w in model.backbone.weights]


@pytest.mark.parametrize(
    "preset, family, size, tokens, scale, offset, interpolation, groups",
    [
        (
            "resnet_50_imagenet",
            "resnet",
            224,
            None,
            IMAGENET_SCALE,
            IMAGENET_OFFSET,
            "bicubic",
            # ResNet-50's groups: the stem, then its four stages.
            ["stem", "stack0", "stack1", "stack2", "stack3"],
        ),
        (
            "vit_base_patch16_224_imagenet",
            "vit",
            224,
            # 14x14 patches of 16 pixels and the class token.
            14 * 14 + 1,
            MINUS_ONE_TO_ONE_SCALE,
            MINUS_ONE_TO_ONE_OFFSET,
            "bilinear",
            ["vit_patching_and_embedding"]
            + [f"transformer_block_{i}" for i in range(1, 5)]
            + ["ln"],
        ),
        (
            "deit_base_distilled_patch16_384_imagenet",
            "deit",
            384,
            # 24x24 patches, the class and the distillation token.
            24 * 24 + 2,
            IMAGENET_SCALE,
            IMAGENET_OFFSET,
            "bicubic",
            ["deit_patching_and_embedding"]
            + [f"transformer_block_{i}" for i in range(1, 5)]
            + ["ln"],
        ),
    ],
    ids=["resnet", "vit", "deit"],
)
def test_standin_has_the_real_presets_input_contract(
    preset,
    family,
    size,
    tokens,
    scale,
    offset,
    interpolation,
    groups,
    tmp_path,
):
    standin = standins.standin_preset(preset, tmp_path / "standin")
    assert standin.path == tmp_path / "standin"
    assert standin.family == family
    assert standin.notes == ()

    model = TransferClassifier.from_preset(standin.path, num_classes=3)
    assert backbones.family_of(model.backbone).name == family
    assert tuple(model.image_size) == (size, size)
    converter = model.image_converter
    np.testing.assert_allclose(converter.scale, scale, rtol=1e-6)
    np.testing.assert_allclose(converter.offset, offset, rtol=1e-6)
    assert converter.interpolation == interpolation
    if tokens is not None:
        assert model.backbone.output.shape[1] == tokens
    assert [g.name for g in model.layer_groups()] == groups
    assert model.backbone.count_params() < MAX_PARAMS

    images = kit.random_images(2, image_size=size)
    assert model.predict(images, verbose=0).shape == (2, 3)

    # The directory says what it stands in for.
    marker = json.loads((standin.path / standins.MARKER_FILE).read_text())
    assert marker["preset"] == preset
    assert marker["family"] == family


# One preset of each other family: its input size (keras-hub's conversion
# scripts, timm 1.0.31's pretrained configs) and normalization (the same
# configs).
OTHER_FAMILIES = [
    ("efficientnet_b3_ra2_imagenet", "efficientnet", 288, "imagenet"),
    # timm's ra4 EfficientNets use Inception mean/std.
    (
        "efficientnet_b1_ra4_e3600_r240_imagenet",
        "efficientnet",
        240,
        "minus_one_to_one",
    ),
    ("mobilenet_v3_small_100_imagenet", "mobilenet", 224, "imagenet"),
    # timm's MIIL ImageNet-21k MobileNet: mean 0, std 1.
    ("mobilenet_v3_large_100_imagenet_21k", "mobilenet", 224, "zero_one"),
    ("densenet_121_imagenet", "densenet", 224, "imagenet"),
    ("vgg_16_imagenet", "vgg", 224, "imagenet"),
    ("csp_darknet_53_ra_imagenet", "cspnet", 256, "imagenet"),
    ("xception_41_imagenet", "xception", 299, "minus_one_to_one"),
    ("swin_tiny_patch4_window7_224", "swin", 224, "imagenet"),
    ("dinov2_small", "dinov2", 518, "imagenet"),
]


# -mean / std, worked out from torchvision's ImageNet statistics
# (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), and for [-1, 1] and [0, 1].
EXPECTED_OFFSETS = {
    "imagenet": [-2.117904, -2.035714, -1.804444],
    "minus_one_to_one": [-1.0, -1.0, -1.0],
    "zero_one": [0.0, 0.0, 0.0],
}


@pytest.mark.parametrize(
    "preset, family, size, normalization",
    OTHER_FAMILIES,
    ids=[case[0] for case in OTHER_FAMILIES],
)
def test_every_family_stands_in(preset, family, size, normalization, tmp_path):
    standin = standins.standin_preset(preset, tmp_path / "standin")
    model = TransferClassifier.from_preset(standin.path, num_classes=3)
    assert backbones.family_of(model.backbone).name == family
    assert tuple(model.image_size) == (size, size)
    assert standin.normalization.name == normalization
    np.testing.assert_allclose(
        model.image_converter.offset, EXPECTED_OFFSETS[normalization], atol=1e-6
    )
    # Stages or blocks to unfreeze one by one, as in the real backbone.
    assert len(model.layer_groups()) >= 4
    images = kit.random_images(2, image_size=size)
    assert np.all(np.isfinite(model.predict(images, verbose=0)))


def test_transformer_standins_keep_the_real_token_grid(tmp_path):
    # ViT-B/32 at 384: a 12x12 grid and the class token.
    vit = standins.standin_preset("vit_base_patch32_384_imagenet", tmp_path)
    backbone = TransferClassifier.from_preset(vit.path, num_classes=3).backbone
    assert backbone.output.shape[1] == 12 * 12 + 1
    # DINOv2 with registers at 518: 37x37 patches of 14, the class token
    # and four registers, which pooling skips.
    dinov2 = standins.standin_preset(
        "dinov2_with_registers_small", tmp_path / "dinov2"
    )
    backbone = TransferClassifier.from_preset(
        dinov2.path, num_classes=3
    ).backbone
    assert backbone.output.shape[1] == 37 * 37 + 5
    assert backbones.num_prefix_tokens(backbone) == 5


def test_same_seed_same_weights_whatever_the_global_seed(tmp_path):
    keras.utils.set_random_seed(1)
    first = standins.standin_preset("resnet_50_imagenet", tmp_path / "a")
    keras.utils.set_random_seed(2)
    second = standins.standin_preset("resnet_50_imagenet", tmp_path / "b")
    other = standins.standin_preset(
        "resnet_50_imagenet", tmp_path / "c", seed=1
    )
    for ours, theirs in zip(
        _backbone_weights(first.path),
        _backbone_weights(second.path),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs)
    differs = [
        not np.array_equal(ours, theirs)
        for ours, theirs in zip(
            _backbone_weights(first.path),
            _backbone_weights(other.path),
            strict=True,
        )
    ]
    assert any(differs)


def test_build_leaves_the_callers_random_streams_alone(tmp_path):
    # The run seeds Python's and NumPy's generators with the recipe's seed
    # before the stand-in is built; the build must not reseed them.
    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), np.random.random())
    random.seed(5)
    np.random.seed(5)
    standins.standin_preset("vit_base_patch16_224_imagenet", tmp_path)
    assert (random.random(), np.random.random()) == expected


def test_cached_under_the_kerastl_cache_dir_and_reused():
    standin = standins.standin_preset("resnet_50_imagenet")
    expected = cache.cache_root() / "standins" / "resnet_50_imagenet"
    assert standin.path == expected
    weights = standin.path / "model.weights.h5"
    written = weights.stat().st_mtime_ns
    again = standins.standin_preset("resnet_50_imagenet")
    assert again == standin
    assert weights.stat().st_mtime_ns == written


def test_handles_get_a_folder_of_their_own():
    # Both would be "hf_me_resnet" with only the unsafe characters replaced.
    first = standins.default_directory("hf://me/resnet")
    second = standins.default_directory("hf://me_resnet")
    assert first != second
    assert first.parent == second.parent
    assert "/" not in first.name


def test_another_directory_is_never_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError) as info:
        standins.standin_preset("resnet_50_imagenet", tmp_path)
    assert "not a kerastl stand-in" in str(info.value)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_stale_standin_is_rebuilt(tmp_path):
    standins.standin_preset("resnet_50_imagenet", tmp_path / "s")
    replaced = standins.standin_preset("vgg_16_imagenet", tmp_path / "s")
    model = TransferClassifier.from_preset(replaced.path, num_classes=3)
    assert backbones.family_of(model.backbone).name == "vgg"


def test_handles_guess_the_family_from_their_name(tmp_path):
    vit = standins.standin_preset(
        "hf://google/vit-base-patch16-384", tmp_path / "vit"
    )
    assert (vit.family, vit.image_size, vit.notes) == ("vit", (384, 384), ())
    # keras-hub's own Kaggle handle of a built-in preset is that preset.
    handle = (
        "kaggle://keras/deit/keras/deit_tiny_distilled_patch16_224_imagenet"
    )
    kaggle = standins.standin_preset(f"{handle}/1", tmp_path / "deit")
    assert (kaggle.family, kaggle.image_size) == ("deit", (224, 224))
    assert kaggle.notes == ()


def test_unknown_handle_falls_back_to_resnet_and_says_so(tmp_path):
    standin = standins.standin_preset("hf://someone/mystery-model", tmp_path)
    assert standin.family == "resnet"
    assert standin.image_size == (224, 224)
    message = standin.message
    assert "\n" not in message
    assert "hf://someone/mystery-model" in message
    assert "resnet was guessed" in message
    assert "224x224" in message
    assert str(tmp_path) in message


@pytest.mark.parametrize(
    "preset, family",
    [("mit_b0_ade20k_512", "mit"), ("dinov3_vit_small_lvd1689m", "dinov3")],
)
def test_family_without_standin_names_the_fix(preset, family, tmp_path):
    with pytest.raises(ValueError) as info:
        standins.standin_preset(preset, tmp_path / "standin")
    message = str(info.value)
    assert f"no offline stand-in for the {family} family" in message
    assert "--set preset=PATH" in message
    assert f"Received: preset='{preset}'" in message
    assert not (tmp_path / "standin").exists()
