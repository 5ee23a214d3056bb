"""Backbone registry and configuration validation (no TensorFlow)."""

from __future__ import annotations

import dataclasses

import pytest

from edgetl.config import DataConfig, ModelConfig, TrainConfig, dump_yaml, from_dict, load_yaml
from edgetl.errors import ConfigError, UnknownBackboneError, WeightsError
from edgetl.model import registry

EXPECTED = {
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "mobilenet_v3_small_minimalistic", "mobilenet_v3_large_minimalistic",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_v2_b0", "efficientnet_v2_b1", "efficientnet_v2_b2",
}


def test_registry_lists_every_backbone():
    assert set(registry.list_backbones()) == EXPECTED
    assert registry.list_backbones("efficientnet_v2*") == ["efficientnet_v2_b0", "efficientnet_v2_b1", "efficientnet_v2_b2"]


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(UnknownBackboneError, match="Did you mean 'mobilenet_v2'"):
        registry.get("mobilenetv2")
    assert registry.get("MobileNet-V2").name == "mobilenet_v2"


def test_specs_carry_preprocessing_and_weights_names():
    v2 = registry.get("mobilenet_v2")
    assert v2.preprocessing.scale == pytest.approx(1 / 127.5) and v2.preprocessing.offset == -1.0
    assert v2.weights_file(0.35, 224) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert v2.weights_file(0.35, 64) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert registry.get("mobilenet_v1").weights_file(0.25, 224) == "mobilenet_2_5_224_tf_no_top.h5"
    assert registry.get("efficientnet_b0").preprocessing.in_model
    assert registry.get("efficientnet_v2_b1").weights_file(None, 240) == "efficientnetv2-b1_notop.h5"
    assert registry.get("mobilenet_v3_small_minimalistic").weights_file(1.0, 224) == \
        "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5"


def test_imagenet_alpha_and_size_checks():
    v2 = registry.get("mobilenet_v2")
    with pytest.raises(WeightsError, match="No ImageNet weights exist for 'mobilenet_v2' with alpha=0.6"):
        v2.check_imagenet(0.6, 224)
    with pytest.raises(WeightsError, match="pretrained widths are"):
        registry.get("mobilenet_v3_small_minimalistic").check_imagenet(0.75, 224)
    with pytest.raises(ConfigError, match="too small"):
        v2.resolve_size(16)
    with pytest.raises(ConfigError, match="no width multiplier"):
        registry.get("efficientnet_b0").resolve_alpha(0.5)


def test_register_custom_backbone():
    spec = dataclasses.replace(registry.get("mobilenet_v2"), name="my_test_backbone")
    registry.register(spec)
    try:
        assert registry.get("my_test_backbone") is spec
        with pytest.raises(ConfigError, match="already registered"):
            registry.register(spec)
    finally:
        registry._REGISTRY.pop("my_test_backbone")


def test_config_ranges_and_choices():
    with pytest.raises(ConfigError, match="`val_fraction`=0.0"):
        DataConfig(val_fraction=0.0)
    with pytest.raises(ConfigError, match="`lr_schedule`='cosin'.*Did you mean 'cosine'"):
        TrainConfig(lr_schedule="cosin")
    with pytest.raises(ConfigError, match="`dropout`"):
        ModelConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="`warmup_epochs`=5 leaves no fine-tuning epoch.*fine_tune_epochs=5"):
        TrainConfig(fine_tune_epochs=5, warmup_epochs=5)
    assert TrainConfig(fine_tune_epochs=0, warmup_epochs=1).warmup_epochs == 1  # no stage 2: nothing to warm up


def test_from_dict_rejects_unknown_keys_and_types():
    with pytest.raises(ConfigError, match=r"Unknown key `train.epoch`. Did you mean 'epochs'"):
        from_dict(TrainConfig, {"epoch": 3}, "train")
    with pytest.raises(ConfigError, match=r"`train.epochs` must be int, got 'three'"):
        from_dict(TrainConfig, {"epochs": "three"}, "train")
    config = from_dict(DataConfig, {"path": "x", "augment": {"enabled": False}}, "data")
    assert config.augment.enabled is False


def test_renamed_recipe_keys_still_load_with_a_warning(caplog):
    from edgetl.config import ExportConfig

    with caplog.at_level("WARNING", logger="edgetl.config"):
        config = from_dict(ExportConfig, {"max_accuracy_drop": 3.5}, "export")
    assert config.flag_drop == 3.5
    assert "`export.max_accuracy_drop` is now called `export.flag_drop`" in caplog.text
    with pytest.raises(ConfigError, match="same setting"):
        from_dict(ExportConfig, {"max_accuracy_drop": 3.5, "flag_drop": 1.0}, "export")


def test_yaml_round_trip_and_malformed(tmp_path):
    text = dump_yaml({"data": DataConfig(path="d"), "train": TrainConfig(epochs=3)})
    file = tmp_path / "c.yaml"
    file.write_text(text)
    loaded = load_yaml(str(file))
    assert from_dict(TrainConfig, loaded["train"]).epochs == 3
    assert from_dict(DataConfig, loaded["data"]) == DataConfig(path="d")
    file.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_yaml(str(file))


def test_shipped_recipes_load_and_name_real_backbones():
    from pathlib import Path

    from edgetl.recipe import load_recipe

    recipes = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.yaml"))
    assert len(recipes) >= 3
    for recipe in recipes:
        configs = load_recipe(str(recipe))
        spec = registry.get(configs["model"].backbone)
        assert configs["model"].size == 224
        if configs["model"].weights == "imagenet":
            spec.check_imagenet(spec.resolve_alpha(configs["model"].alpha), 224)


def test_recipe_errors_name_section_and_key(tmp_path):
    from edgetl.recipe import load_recipe

    bad = tmp_path / "r.yaml"
    bad.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"Unknown section `trian`.*Did you mean 'train'"):
        load_recipe(str(bad))
    bad.write_text("train:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"`epochs`=-1 is out of range"):
        load_recipe(str(bad))
    bad.write_text("model:\n  dropout: high\n")
    with pytest.raises(ConfigError, match=r"`model.dropout` must be float, got 'high'"):
        load_recipe(str(bad))
