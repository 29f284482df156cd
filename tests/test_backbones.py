import keras_hub
import kit
import pytest

from kerastl import TransferClassifier
from kerastl.models import backbones
from kerastl.models import catalog
from kerastl.models import grouping


def test_resnet_groups_are_stem_then_stages():
    backbone, _ = kit.tiny_resnet()
    groups = grouping.layer_groups(backbone)
    assert [g.name for g in groups] == ["stem", "stack0", "stack1", "stack2"]
    # Each stage holds exactly the layers keras-hub named after it.
    for group in groups[1:]:
        expected = {
            layer.name
            for layer in backbone.layers
            if layer.name.startswith(group.name + "_")
        }
        assert {layer.name for layer in group.layers} == expected


def test_vit_groups_are_embedding_blocks_and_norm():
    backbone, _ = kit.tiny_vit()
    groups = grouping.layer_groups(backbone)
    assert [g.name for g in groups] == [
        "vit_patching_and_embedding",
        "transformer_block_1",
        "transformer_block_2",
        "ln",
    ]
    encoder = backbone.get_layer("vit_encoder")
    assert groups[1].layers[0] is encoder.encoder_layers[0]
    assert groups[-1].layers == [encoder.layer_norm]


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_groups_cover_every_weight_once(family):
    backbone, _ = kit.TINY_BACKBONES[family]()
    grouped = [
        id(w) for g in grouping.layer_groups(backbone) for w in g.weights
    ]
    assert sorted(grouped) == sorted(id(w) for w in backbone.weights)


def tiny_deit():
    return keras_hub.models.DeiTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )


def tiny_dinov2():
    return keras_hub.models.DINOV2Backbone(
        patch_size=8,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        num_register_tokens=2,
        image_shape=(32, 32, 3),
        position_embedding_shape=(32, 32, 3),
    )


def tiny_efficientnet():
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0, 1.0],
        stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 2],
        stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[1, 2],
        stackwise_block_types=["v1", "v1"],
        stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False],
        input_shape=(32, 32, 3),
        num_features=32,
    )


@pytest.mark.parametrize(
    "build, family, pooling, prefix, groups",
    [
        # DeiT prepends a class and a distillation token to its 16 patches.
        (tiny_deit, "deit", "token", 2, 4),
        # DINOv2: a class token and, here, two register tokens.
        (tiny_dinov2, "dinov2", "token", 3, 4),
        (tiny_efficientnet, "efficientnet", "avg", 0, 3),
    ],
    ids=["deit", "dinov2", "efficientnet"],
)
def test_other_families(build, family, pooling, prefix, groups):
    backbone = build()
    assert backbones.family_of(backbone).name == family
    assert backbones.auto_pooling(backbone) == pooling
    if pooling == "token":
        assert backbones.num_prefix_tokens(backbone) == prefix
        assert backbone.output.shape[1] == 16 + prefix
    found = grouping.layer_groups(backbone)
    assert len(found) == groups
    grouped = sorted(id(w) for g in found for w in g.weights)
    assert grouped == sorted(id(w) for w in backbone.weights)
    converter = keras_hub.layers.ImageConverter(
        image_size=(32, 32), scale=1 / 255
    )
    model = TransferClassifier(backbone, 3, image_converter=converter)
    probs = model.predict(kit.random_images(2), verbose=0)
    assert probs.shape == (2, 3)
    model.freeze_backbone()
    assert len(model.trainable_weights) == 2


def test_auto_pooling():
    resnet, _ = kit.tiny_resnet()
    vit, _ = kit.tiny_vit()
    no_token, _ = kit.tiny_vit(use_class_token=False)
    assert backbones.auto_pooling(resnet) == "avg"
    assert backbones.auto_pooling(vit) == "token"
    assert backbones.auto_pooling(no_token) == "mean_tokens"


def test_unknown_preset_names_close_matches():
    with pytest.raises(ValueError) as info:
        catalog.check_preset("resnet_50_imagenett")
    message = str(info.value)
    assert "Unknown preset 'resnet_50_imagenett'" in message
    assert "resnet_50_imagenet" in message


def test_missing_preset_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        catalog.check_preset(str(tmp_path / "nowhere"))


def test_known_presets_and_handles_pass():
    catalog.check_preset("resnet_50_imagenet")
    catalog.check_preset("vit_base_patch16_224_imagenet")
    catalog.check_preset("hf://google/vit-base-patch16-224")


def test_missing_preset_directory_names_it(tmp_path):
    path = str(tmp_path / "nowhere")
    with pytest.raises(ValueError) as info:
        catalog.check_preset(path)
    assert str(info.value).endswith(f"Received: preset={path!r}")


# Input sizes of real presets, looked up: keras-hub's registry descriptions
# (ResNet, DenseNet, MobileNet, ViT, Swin, CSPNet), timm 1.0.31's pretrained
# configs of the checkpoints keras-hub converted (EfficientNet), keras-hub's
# conversion scripts (Xception 299, DINOv2 518). `None` where no offline
# source says: MiT's 512 is the segmentation crop of its SegFormer.
TRUE_INPUT_SIZES = {
    "resnet_101_imagenet": 224,
    "resnet_152_imagenet": 224,
    "resnet_vd_200_imagenet": 224,
    "densenet_121_imagenet": 224,
    "mobilenet_v3_small_100_imagenet": 224,
    "vit_base_patch16_384_imagenet": 384,
    "vit_large_patch32_224_imagenet21k": 224,
    "deit_base_distilled_patch16_384_imagenet": 384,
    "swin_base_patch4_window12_384": 384,
    "csp_darknet_53_ra_imagenet": 256,
    "efficientnet_b1_ra4_e3600_r240_imagenet": 240,
    "efficientnet_b3_ra2_imagenet": 288,
    "efficientnet_b5_sw_ft_imagenet": 448,
    "xception_41_imagenet": 299,
    "dinov2_small": 518,
    "mit_b0_ade20k_512": None,
}


def test_presets_show_true_input_sizes():
    rows = {row[0]: row for row in catalog.describe_presets()}
    for name, size in TRUE_INPUT_SIZES.items():
        expected = f"{size}x{size}" if size else "-"
        assert rows[name][3] == expected, name


@pytest.mark.parametrize(
    "handle, size",
    [
        ("hf://google/vit-base-patch16-224-in21k", (224, 224)),
        ("hf://timm/efficientnet_b1.ra4_e3600_r240_in1k", (240, 240)),
        # keras-hub's own handle of a built-in preset is that preset.
        ("kaggle://keras/resnetv1/keras/resnet_101_imagenet/3", (224, 224)),
        # The 101 is a depth.
        ("hf://timm/resnet101.a1_in1k", None),
    ],
)
def test_input_size_of_handles(handle, size):
    assert catalog.preset_input_size(handle) == size


def test_preset_family_offline():
    assert catalog.preset_family("resnet_50_imagenet").name == "resnet"
    handle = "kaggle://keras/vit/keras/vit_base_patch16_224_imagenet/4"
    assert catalog.preset_family(handle).name == "vit"
    assert catalog.preset_family("hf://google/vit-base-patch16-224") is None
    assert catalog.preset_family("resnet_50_imagenett") is None
