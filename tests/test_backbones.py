import keras_hub
import pytest

from kerastl import backbones
from kerastl import testing


def test_resnet_groups_are_stem_then_stages():
    backbone, _ = testing.tiny_resnet()
    groups = backbones.layer_groups(backbone)
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
    backbone, _ = testing.tiny_vit()
    groups = backbones.layer_groups(backbone)
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
    backbone, _ = testing.TINY_BACKBONES[family]()
    grouped = [
        id(w) for g in backbones.layer_groups(backbone) for w in g.weights
    ]
    assert sorted(grouped) == sorted(id(w) for w in backbone.weights)


def test_other_families_pool_and_group():
    backbone = keras_hub.models.DeiTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )
    assert backbones.family_of(backbone).name == "deit"
    # DeiT prepends a class and a distillation token to its 16 patches.
    assert backbone.output.shape[1] == 16 + 2
    assert backbones.num_prefix_tokens(backbone) == 2
    assert backbones.auto_pooling(backbone) == "token"
    groups = backbones.layer_groups(backbone)
    assert len(groups) == 2 + 2  # embeddings, two blocks, final norm
    grouped = sorted(id(w) for g in groups for w in g.weights)
    assert grouped == sorted(id(w) for w in backbone.weights)


def test_auto_pooling():
    resnet, _ = testing.tiny_resnet()
    vit, _ = testing.tiny_vit()
    no_token = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        use_class_token=False,
    )
    assert backbones.auto_pooling(resnet) == "avg"
    assert backbones.auto_pooling(vit) == "token"
    assert backbones.auto_pooling(no_token) == "mean_tokens"


def test_unknown_preset_names_close_matches():
    with pytest.raises(ValueError) as info:
        backbones.check_preset("resnet_50_imagenett")
    message = str(info.value)
    assert "Unknown preset 'resnet_50_imagenett'" in message
    assert "resnet_50_imagenet" in message


def test_missing_preset_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        backbones.check_preset(str(tmp_path / "nowhere"))


def test_known_presets_and_handles_pass():
    backbones.check_preset("resnet_50_imagenet")
    backbones.check_preset("vit_base_patch16_224_imagenet")
    backbones.check_preset("hf://google/vit-base-patch16-224")
