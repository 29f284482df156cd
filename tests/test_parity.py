"""Parity with transformers' own PyTorch models, on every Keras backend.

Random-weight Hugging Face checkpoints are written locally with
`save_pretrained` and loaded through `TransferClassifier.from_preset`, as a
Hub checkpoint would be. transformers computes the reference outputs. The
checks across backends (same weights, same logits; same recipe and seed,
same metrics) need all three backends at once: `nox -s parity`.
"""

import numpy as np
import pytest

from kerastl import TransferClassifier
from kerastl import backbones
from kerastl import testing

pytest.importorskip("transformers")


@pytest.mark.parametrize("family", sorted(testing.HF_FAMILIES))
def test_hugging_face_checkpoint_matches_transformers(family, tmp_path):
    import torch

    hf_model, processor = testing.write_hf_checkpoint(family, tmp_path / "hf")
    model = TransferClassifier.from_preset(tmp_path / "hf", num_classes=3)
    images = testing.random_images(3)
    pixels = processor(images=list(images), return_tensors="pt")
    with torch.no_grad():
        hidden = hf_model(**pixels).last_hidden_state.numpy()
    # The backbone on transformers' own preprocessed pixels: every token.
    channels_last = np.transpose(pixels["pixel_values"].numpy(), (0, 2, 3, 1))
    key, _ = backbones.image_input(model.backbone)
    sequence = model.backbone.predict(
        {key: channels_last} if key else channels_last, verbose=0
    )
    np.testing.assert_allclose(sequence, hidden, atol=1e-4)
    # Raw uint8 images in: the model applies the checkpoint's preprocessing,
    # and pools the class token.
    features = model.feature_extractor().predict(images, verbose=0)
    np.testing.assert_allclose(features, hidden[:, 0], atol=1e-4)
