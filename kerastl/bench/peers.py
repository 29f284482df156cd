"""The models kerastl's speed is measured against: the same backbone in
keras-hub's own classifier, and on PyTorch a transformers model trained in
a plain PyTorch loop; plus the built-in random-weight backbones with a
PyTorch twin.
"""

import keras_hub
import numpy as np

from kerastl.models import backbones
from kerastl.models import standins

# Built-in architectures (random weights): no download, and a transformers
# twin for the PyTorch peer. Each: keras-hub backbone class and arguments,
# transformers model class and config arguments.
NUM_CLASSES = 10
_RESNET_STEM = dict(
    input_conv_filters=[64],
    input_conv_kernel_sizes=[7],
    stackwise_num_filters=[64, 128, 256, 512],
    stackwise_num_strides=[1, 2, 2, 2],
    use_pre_activation=False,
)
_ARCHITECTURES = {
    "resnet18": (
        "ResNetBackbone",
        dict(
            _RESNET_STEM,
            stackwise_num_blocks=[2, 2, 2, 2],
            block_type="basic_block",
        ),
        "ResNet",
        dict(
            embedding_size=64,
            hidden_sizes=[64, 128, 256, 512],
            depths=[2, 2, 2, 2],
            layer_type="basic",
        ),
    ),
    "resnet50": (
        "ResNetBackbone",
        dict(
            _RESNET_STEM,
            stackwise_num_blocks=[3, 4, 6, 3],
            block_type="bottleneck_block",
        ),
        "ResNet",
        dict(
            embedding_size=64,
            hidden_sizes=[256, 512, 1024, 2048],
            depths=[3, 4, 6, 3],
            layer_type="bottleneck",
        ),
    ),
    "vit_tiny": (
        "ViTBackbone",
        dict(
            patch_size=16,
            num_layers=12,
            num_heads=3,
            hidden_dim=192,
            mlp_dim=768,
        ),
        "ViT",
        dict(
            patch_size=16,
            hidden_size=192,
            num_hidden_layers=12,
            num_attention_heads=3,
            intermediate_size=768,
        ),
    ),
    "vit_base": (
        "ViTBackbone",
        dict(
            patch_size=16,
            num_layers=12,
            num_heads=12,
            hidden_dim=768,
            mlp_dim=3072,
        ),
        "ViT",
        dict(
            patch_size=16,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
        ),
    ),
}
BUILT_IN = tuple(_ARCHITECTURES)


def built_in_backbone(name, image_size):
    """A built-in architecture with random weights, and its converter.

    Args:
        name: `"resnet18"` (4 stages of 2 basic blocks), `"resnet50"` (3,
            4, 6, 3 bottleneck blocks), `"vit_tiny"` (ViT-Ti/16: 12
            layers, width 192, 3 heads) or `"vit_base"` (ViT-B/16: width
            768, 12 heads).
        image_size: int.

    Example:
    ```python
    backbone, converter = kerastl.bench.peers.built_in_backbone("resnet18", 96)
    ```
    """
    if name not in _ARCHITECTURES:
        raise ValueError(
            f"The built-in benchmark models are {', '.join(BUILT_IN)}; for "
            f"anything else pass a preset. Received: {name!r}"
        )
    class_name, arguments, _, _ = _ARCHITECTURES[name]
    backbone = getattr(keras_hub.models, class_name)(
        image_shape=(image_size, image_size, 3), **arguments
    )
    return backbone, standins.imagenet_converter(image_size)


def keras_hub_classifier(backbone):
    if backbones.family_of(backbone).name == "vit":
        return keras_hub.models.ViTImageClassifier(
            backbone, NUM_CLASSES, preprocessor=None
        )
    return keras_hub.models.ImageClassifier(
        backbone, NUM_CLASSES, preprocessor=None, pooling="avg"
    )


def torch_native_tasks(settings, data):
    """A transformers model of the same architecture in a PyTorch loop.

    Returns `_interleaved_speeds` tasks: training and predicting `steps`
    batches of `data`.
    """
    import torch
    import transformers

    _, _, family, arguments = _ARCHITECTURES[settings.model]
    if family == "ViT":
        arguments = dict(arguments, image_size=settings.image_size)
    config = getattr(transformers, f"{family}Config")(
        num_labels=NUM_CLASSES, **arguments
    )
    model = getattr(transformers, f"{family}ForImageClassification")(config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    batches = data.as_numpy_iterator()

    def pixels():
        images, labels = next(batches)[:2]
        # The same work kerastl's image converter does, in the model.
        x = torch.as_tensor(np.array(images)).to(device)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return (x - mean) / std, torch.as_tensor(np.array(labels)).long().to(
            device
        )

    # Keras' mixed policies compute in half precision and keep float32
    # weights: autocast is PyTorch's same arrangement.
    half = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}
    policy = settings.dtype_policy

    def autocast():
        return torch.autocast(
            device_type=device,
            dtype=half.get(policy, torch.bfloat16),
            enabled=policy in half,
        )

    def train(steps):
        model.train()
        for _ in range(steps):
            x, y = pixels()
            with autocast():
                logits = model(x).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _synchronize(torch)

    @torch.no_grad()
    def predict(steps):
        model.eval()
        for _ in range(steps):
            with autocast():
                model(pixels()[0])
        _synchronize(torch)

    return [("torch_train_full", train), ("torch_predict", predict)]


def _synchronize(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
