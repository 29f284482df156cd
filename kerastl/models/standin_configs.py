"""The configs of the stand-ins: for each backbone family, the smallest
keras-hub backbone of its kind, and how a preset's name says its family
and preprocessing.
"""

import dataclasses

from kerastl.models import preprocessing


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How a preset's image converter rescales and resizes pixels.

    Per-channel `(pixel / 255 - mean) / std` with one of kerastl's named
    normalizations (`kerastl.models.preprocessing.NORMALIZATIONS`), written
    the way keras-hub's converters built from timm and Hugging Face configs
    write it: `scale` is `1 / (255 * std)` and `offset` is `-mean / std`.

    Args:
        name: str. `"imagenet"`, `"minus_one_to_one"` or `"zero_one"`.
        interpolation: str. The converter's resize interpolation.
        crop_to_aspect_ratio: bool. Whether the converter center-crops to
            the target aspect ratio before resizing (else it squashes).
        antialias: bool. Whether the resize antialiases.

    Example:
    ```python
    from kerastl.models.standin_configs import Normalization

    normalization = Normalization("imagenet", "bicubic")
    converter = normalization.converter(
        keras_hub.layers.ResNetImageConverter, (224, 224)
    )
    ```
    """

    name: str
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = True
    antialias: bool = False

    def converter(self, converter_class, image_size):
        """A `converter_class` instance resizing to `image_size`."""
        return preprocessing.standard_converter(
            self.name,
            pair(image_size),
            converter_class,
            interpolation=self.interpolation,
            crop_to_aspect_ratio=self.crop_to_aspect_ratio,
            antialias=self.antialias,
        )


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How to stand in for one family.

    `config` maps `(height, width)` to the tiny backbone's constructor
    arguments; `normalization` is the family's standard preprocessing, as
    the image_converter.json of its keras-hub presets holds it; `image_size`
    is used when no offline source states the preset's own.
    """

    config: object
    normalization: Normalization
    image_size: int = 224


def _resnet(size):
    # Four stages of bottleneck blocks like ResNet-50, so stage-wise
    # unfreezing addresses the same groups (stem, stack0-3). keras-hub
    # insists the first stage has 64 filters; the others stay narrow.
    return dict(
        input_conv_filters=[8],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block",
        use_pre_activation=False,
        image_shape=(*size, 3),
    )


# Transformers: the real patch size keeps the real token grid. Four blocks
# keep "unfreeze the last N blocks" meaningful, and the blocks must hold most
# of the weights, as in the real models, for `grouping.layer_groups` to
# split them (a 16x16x3 patch embedding is 768 weights per channel).
def _vit(size):
    return dict(
        image_shape=(*size, 3),
        patch_size=16,
        num_layers=4,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=128,
    )


def _deit(size):
    # The ViT stand-in's shape; keras-hub's DeiT names its MLP width apart.
    config = _vit(size)
    config["intermediate_dim"] = config.pop("mlp_dim")
    return config


def _dinov2(size):
    # DINOv2 keeps its position embeddings interpolated to the image's patch
    # grid as a weight: 1370 of them at 518x518. Learning them on a 5x5 grid
    # and a width of 64 leave most weights in the blocks.
    return dict(
        patch_size=14,
        num_layers=4,
        hidden_dim=64,
        num_heads=2,
        intermediate_dim=256,
        image_shape=(*size, 3),
        position_embedding_shape=(70, 70, 3),
    )


def _swin(size):
    return dict(
        image_shape=(*size, 3),
        patch_size=4,
        window_size=7,
        embed_dim=8,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 2, 2),
    )


def _efficientnet(size):
    # keras-hub 0.32 leaves `num_features` out of the saved config, so the
    # top convolution keeps its default width of 1280 to load back.
    stages = 3
    return dict(
        stackwise_width_coefficients=[1.0] * stages,
        stackwise_depth_coefficients=[1.0] * stages,
        stackwise_kernel_sizes=[3, 3, 5],
        stackwise_num_repeats=[1] * stages,
        stackwise_input_filters=[8, 8, 16],
        stackwise_output_filters=[8, 16, 24],
        stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.25] * stages,
        stackwise_strides=[1, 2, 2],
        stackwise_block_types=["v1"] * stages,
        stackwise_force_input_filters=[0] * stages,
        stackwise_nores_option=[False] * stages,
        input_shape=(*size, 3),
    )


def _mobilenet(size):
    # One block per stage with MobileNetV3's activations, sized so that no
    # block holds most of the weights (`grouping.layer_groups` would split
    # it into its layers).
    return dict(
        stackwise_expansion=[[16], [24], [32], [32]],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_filters=[[8], [16], [16], [16]],
        stackwise_kernel_size=[[3], [3], [5], [5]],
        stackwise_num_strides=[[2], [2], [2], [1]],
        stackwise_se_ratio=[[None], [None], [0.25], [0.25]],
        stackwise_activation=[["relu"], ["relu"]] + [["hard_swish"]] * 3,
        stackwise_padding=[[1], [1], [2], [2]],
        output_num_filters=32,
        input_activation="hard_swish",
        output_activation="hard_swish",
        input_num_filters=8,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        squeeze_and_excite=0.5,
        last_layer_filter=32,
        image_shape=(*size, 3),
    )


def _densenet(size):
    return dict(
        stackwise_num_repeats=[1, 1, 1, 1],
        growth_rate=4,
        image_shape=(*size, 3),
    )


def _vgg(size):
    return dict(
        stackwise_num_repeats=[1, 1, 1, 1, 1],
        stackwise_num_filters=[4, 8, 8, 16, 16],
        image_shape=(*size, 3),
    )


def _cspnet(size):
    return dict(
        stem_filters=8,
        stem_kernel_size=3,
        stem_strides=2,
        stem_padding="same",
        stackwise_strides=2,
        stackwise_depth=[1, 1, 1],
        stackwise_num_filters=[8, 16, 32],
        block_type="dark_block",
        stage_type="csp",
        down_growth=True,
        bottle_ratio=(0.5, 1.0),
        block_ratio=(1.0, 0.5),
        expand_ratio=(2.0, 1.0),
        image_shape=(*size, 3),
    )


def _xception(size):
    return dict(
        stackwise_conv_filters=[[8, 8], [16, 16], [32, 32], [32, 32]],
        stackwise_pooling=[False, True, True, True],
        image_shape=(*size, 3),
    )


# Each family's preprocessing is its presets' image_converter.json. keras-hub
# builds it from the source checkpoint's config (tools/checkpoint_conversion/
# convert_<family>_checkpoints.py): timm presets through `TimmPresetLoader.
# load_image_converter` (mean, std, interpolation of timm's pretrained_cfg,
# read in timm 1.0.31's default_cfgs), Hugging Face ones from the
# checkpoint's preprocessor_config.json.
SPECS = {
    # timm resnet50.a1_in1k (and the other resnet_*_imagenet): ImageNet
    # mean/std, bicubic.
    "resnet": _Spec(_resnet, Normalization("imagenet", "bicubic")),
    # google/vit-* image processors: mean = std = 0.5, bilinear
    # (convert_vit_checkpoints.py).
    "vit": _Spec(_vit, Normalization("minus_one_to_one")),
    # facebook/deit-*: ImageNet mean/std, bicubic (convert_deit_checkpoints.py
    # and timm's deit cfgs).
    "deit": _Spec(_deit, Normalization("imagenet", "bicubic")),
    # facebook/dinov2-*: ImageNet mean/std, bicubic, at the config's 518x518
    # (convert_dinov2_checkpoints.py).
    "dinov2": _Spec(_dinov2, Normalization("imagenet", "bicubic"), 518),
    # microsoft/swin-*: ImageNet mean/std, bicubic with antialiasing,
    # squashed rather than cropped (keras-hub's convert_swin_transformer).
    "swin": _Spec(
        _swin,
        Normalization(
            "imagenet",
            "bicubic",
            crop_to_aspect_ratio=False,
            antialias=True,
        ),
    ),
    # timm efficientnet _cfg: ImageNet mean/std, bicubic.
    "efficientnet": _Spec(_efficientnet, Normalization("imagenet", "bicubic")),
    # timm mobilenetv3_*.lamb_in1k / .ra_in1k: ImageNet mean/std, bicubic.
    "mobilenet": _Spec(_mobilenet, Normalization("imagenet", "bicubic")),
    # timm densenet _cfg: ImageNet mean/std, bicubic.
    "densenet": _Spec(_densenet, Normalization("imagenet", "bicubic")),
    # timm vgg _cfg: ImageNet mean/std, bilinear.
    "vgg": _Spec(_vgg, Normalization("imagenet")),
    # timm cspnet _cfg: ImageNet mean/std, bilinear, 256x256.
    "cspnet": _Spec(_cspnet, Normalization("imagenet"), 256),
    # convert_xception_checkpoints.py: scale 1 / 127.5, offset -1 (Keras'
    # Xception preprocessing), 299x299.
    "xception": _Spec(_xception, Normalization("minus_one_to_one"), 299),
}


# Presets whose preprocessing differs from their family's (timm 1.0.31).
PRESET_NORMALIZATION = {
    # efficientnet_b{0,1}.ra4_e3600_*: Inception mean/std.
    "efficientnet_b0_ra4_e3600_r224_imagenet": Normalization(
        "minus_one_to_one", "bicubic"
    ),
    "efficientnet_b1_ra4_e3600_r240_imagenet": Normalization(
        "minus_one_to_one", "bicubic"
    ),
    # mobilenetv3_large_100.miil_in21k_ft_in1k: pixels in [0, 1], bilinear.
    "mobilenet_v3_large_100_imagenet_21k": Normalization("zero_one"),
}


# Words in a hub handle that name a family, most specific first: a
# "dinov3_vit" handle is DINOv3, a "cspresnet" one CSPNet. A word matches
# the start of a token of the handle (`resnet50`, `vit-base`).
HANDLE_WORDS = (
    ("dinov3", "dinov3"),
    ("dinov2", "dinov2"),
    ("deit", "deit"),
    ("swin", "swin"),
    ("efficientnet", "efficientnet"),
    ("mobilenet", "mobilenet"),
    ("densenet", "densenet"),
    ("xception", "xception"),
    ("hgnet", "hgnetv2"),
    ("csp", "cspnet"),
    ("darknet", "cspnet"),
    ("segformer", "mit"),
    ("mit", "mit"),
    ("vgg", "vgg"),
    ("vit", "vit"),
    ("resnet", "resnet"),
)


# What a handle naming no family gets: the family of the bundled recipes.
FALLBACK_FAMILY = "resnet"


def pair(size):
    """`(size, size)` for an int, else `size` as a tuple.

    Example:
    ```python
    kerastl.models.standin_configs.pair(224)  # (224, 224)
    ```
    """
    return (size, size) if isinstance(size, int) else tuple(size)
