"""The test kit: tiny random-weight backbones and shared classifier checks.

Unit tests never download a preset. They build tiny keras-hub backbones with
random weights, or save them as local presets exactly as keras-hub would,
and run the checks every classifier must pass through `ClassifierTestCase`.
"""

import keras
import keras_hub
import numpy as np

from kerastl.data.synthetic import color_images  # noqa: F401 (for tests)
from kerastl.models import standin_configs
from kerastl.models import standins
from kerastl.models.classifier import TransferClassifier
from kerastl.models.standins import imagenet_converter  # noqa: F401

TINY_IMAGE_SIZE = 32


def tiny_resnet(image_size=TINY_IMAGE_SIZE):
    """A three-stage ResNet backbone with random weights and its converter.

    Shaped like `resnet_50_imagenet` (v1 blocks, BatchNorm, ImageNet
    mean/std normalization) but with one basic block per stage.

    Args:
        image_size: int. Height and width the converter resizes to.

    Returns:
        `(backbone, image_converter)`.

    Example:
    ```python
    backbone, converter = kit.tiny_resnet()
    ```
    """
    # Smaller than the offline stand-in: three stages of basic blocks and a
    # 3x3 stem suit 32x32 images.
    backbone = standins.tiny_backbone(
        "resnet",
        image_size,
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32, 16],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
    )
    return backbone, standins.imagenet_converter(image_size)


def tiny_vit(image_size=TINY_IMAGE_SIZE, **kwargs):
    """A two-block ViT backbone with a class token, random weights.

    Args:
        image_size: int. Height and width of the images; patches are 8x8.
        **kwargs: `keras_hub.models.ViTBackbone` arguments to override.

    Returns:
        `(backbone, image_converter)`; the converter scales to [-1, 1] like
        the ViT presets.

    Example:
    ```python
    backbone, converter = kit.tiny_vit()
    ```
    """
    config = dict(
        patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    backbone = standins.tiny_backbone("vit", image_size, **{**config, **kwargs})
    converter = standin_configs.Normalization("minus_one_to_one").converter(
        keras_hub.layers.ViTImageConverter, image_size
    )
    return backbone, converter


TINY_BACKBONES = {"resnet": tiny_resnet, "vit": tiny_vit}


def save_tiny_preset(family, preset_dir):
    """Saves a tiny random backbone as a keras-hub preset directory.

    The directory looks like a downloaded keras-hub preset: backbone config
    and weights, image converter, metadata.

    Args:
        family: str. `"resnet"` or `"vit"`.
        preset_dir: str or path-like. Where to write.

    Returns:
        The saved backbone, to compare against.

    Example:
    ```python
    kit.save_tiny_preset("resnet", tmp_path / "resnet")
    ```
    """
    backbone, converter = TINY_BACKBONES[family]()
    backbone.save_to_preset(str(preset_dir))
    converter.save_to_preset(str(preset_dir))
    return backbone


def random_images(num_images, image_size=TINY_IMAGE_SIZE, seed=0):
    """Random uint8 RGB images, `(num_images, size, size, 3)`.

    Example:
    ```python
    images = kit.random_images(8)
    ```
    """
    rng = np.random.default_rng(seed)
    shape = (num_images, image_size, image_size, 3)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


class ClassifierTestCase:
    """Checks every `TransferClassifier` configuration must pass.

    Mix into a pytest test class; each `run_*` method is one shared check.

    Example:
    ```python
    class TestResNet(kit.ClassifierTestCase):
        def test_basics(self, tmp_path):
            backbone, converter = kit.tiny_resnet()
            self.run_classifier_test(
                dict(backbone=backbone, image_converter=converter,
                     num_classes=3),
                tmp_path,
            )
    ```
    """

    def run_classifier_test(self, init_kwargs, tmp_path, num_images=8):
        """Predict, fit, config and `.keras` round trips on random data."""
        model = TransferClassifier(**init_kwargs)
        num_classes = init_kwargs["num_classes"]
        images = random_images(num_images)
        if model.multi_label:
            rng = np.random.default_rng(1)
            labels = rng.integers(0, 2, size=(num_images, num_classes))
        else:
            labels = np.arange(num_images) % num_classes

        # Outputs: shape, dtype and the range of the head's activation.
        probs = model.predict(images, verbose=0)
        assert probs.shape == (num_images, num_classes)
        assert probs.dtype == np.float32
        if model.activation == "auto":
            assert np.all((probs >= 0) & (probs <= 1))
        if model.activation == "auto" and not model.multi_label:
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

        # Numpy arrays and a tf.data pipeline give the same predictions (to
        # float32 rounding: the batch sizes differ, so XLA's kernels may).
        dataset = self.dataset(images, labels)
        np.testing.assert_allclose(
            model.predict(dataset, verbose=0), probs, rtol=1e-5, atol=1e-6
        )

        # Fit works on both, and the loss is finite.
        history = model.fit(images, labels, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        model.fit(dataset, epochs=1, verbose=0)

        # Config round trip: same class, same config.
        config = model.get_config()
        clone = TransferClassifier.from_config(config)
        assert clone.get_config() == config

        # `.keras` round trip: same class and predictions, no custom objects.
        probs = model.predict(images, verbose=0)
        path = tmp_path / "model.keras"
        model.save(path)
        restored = keras.models.load_model(path)
        assert isinstance(restored, TransferClassifier)
        np.testing.assert_allclose(
            restored.predict(images, verbose=0), probs, atol=1e-6
        )
        return model

    @staticmethod
    def dataset(images, labels, batch_size=4):
        """A batched `tf.data.Dataset` of `(images, labels)`."""
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
            batch_size
        )


# Tiny transformers configs of the families keras-hub converts from Hugging
# Face checkpoints: (config class, model class, base model attribute).
HF_FAMILIES = {
    "vit": ("ViTConfig", "ViTForImageClassification", "vit"),
    "deit": ("DeiTConfig", "DeiTForImageClassificationWithTeacher", "deit"),
    "dinov2": ("Dinov2Config", "Dinov2ForImageClassification", "dinov2"),
}


def write_hf_checkpoint(family, path, seed=0):
    """Writes a random-weight transformers image classifier, as on the Hub.

    A `save_pretrained` checkpoint (config, safetensors weights and the
    image processor's `preprocessor_config.json`) of a 2-layer, 16-wide
    model on 32x32 images, which `TransferClassifier.from_preset(path)`
    loads through keras-hub's converter.

    Args:
        family: str. `"vit"`, `"deit"` or `"dinov2"`.
        path: str or path-like. Where to write.
        seed: int. Seeds torch's generator for the weights.

    Returns:
        `(base_model, processor)`: the transformers backbone (`ViTModel`,
        ...) in eval mode and its image processor, the reference to compare
        against.

    Example:
    ```python
    hf_model, processor = kit.write_hf_checkpoint("deit", dir)
    ```
    """
    import torch
    import transformers

    config_name, model_name, base = HF_FAMILIES[family]
    sizes = dict(
        image_size=TINY_IMAGE_SIZE,
        patch_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        hidden_size=16,
        num_labels=4,
    )
    if family == "dinov2":
        sizes["mlp_ratio"] = 2  # DINOv2 sizes its MLP by ratio.
    else:
        sizes["intermediate_size"] = 32
    torch.manual_seed(seed)
    config = getattr(transformers, config_name)(**sizes)
    model = getattr(transformers, model_name)(config).eval()
    model.save_pretrained(path)
    processor = transformers.ViTImageProcessor(
        size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    processor.save_pretrained(path)
    return getattr(model, base), processor
