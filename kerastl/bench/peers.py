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
# twin for the PyTorch peer.
NUM_CLASSES = 10
BUILT_IN = ("resnet18", "vit_tiny")


def built_in_backbone(name, image_size):
    """A built-in architecture with random weights, and its converter.

    Args:
        name: `"resnet18"` (ResNet-18: 4 stages of 2 basic blocks) or
            `"vit_tiny"` (ViT-Ti/16: 12 layers, width 192, 3 heads).
        image_size: int.

    Example:
    ```python
    backbone, converter = kerastl.bench.peers.built_in_backbone("resnet18", 96)
    ```
    """
    shape = (image_size, image_size, 3)
    if name == "resnet18":
        backbone = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 128, 256, 512],
            stackwise_num_blocks=[2, 2, 2, 2],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="basic_block",
            use_pre_activation=False,
            image_shape=shape,
        )
    elif name == "vit_tiny":
        backbone = keras_hub.models.ViTBackbone(
            image_shape=shape,
            patch_size=16,
            num_layers=12,
            num_heads=3,
            hidden_dim=192,
            mlp_dim=768,
        )
    else:
        raise ValueError(
            f"The built-in benchmark models are {', '.join(BUILT_IN)}; for "
            f"anything else pass a preset. Received: {name!r}"
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

    if settings.model == "resnet18":
        config = transformers.ResNetConfig(
            embedding_size=64,
            hidden_sizes=[64, 128, 256, 512],
            depths=[2, 2, 2, 2],
            layer_type="basic",
            num_labels=NUM_CLASSES,
        )
        model = transformers.ResNetForImageClassification(config)
    else:
        config = transformers.ViTConfig(
            image_size=settings.image_size,
            patch_size=16,
            hidden_size=192,
            num_hidden_layers=12,
            num_attention_heads=3,
            intermediate_size=768,
            num_labels=NUM_CLASSES,
        )
        model = transformers.ViTForImageClassification(config)
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

    def train(steps):
        model.train()
        for _ in range(steps):
            x, y = pixels()
            loss = torch.nn.functional.cross_entropy(model(x).logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _synchronize(torch)

    @torch.no_grad()
    def predict(steps):
        model.eval()
        for _ in range(steps):
            model(pixels()[0])
        _synchronize(torch)

    return [("torch_train_full", train), ("torch_predict", predict)]


def _synchronize(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
