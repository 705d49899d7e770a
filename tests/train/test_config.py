import pytest

from selfgen.train.config import TrainingConfig, load_config, parse_overrides
from selfgen.train.ddpm import DDPMConfig


def test_yaml_and_overrides_build_the_dataclass(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_train_steps: 7\nlearning_rate: 1\nblock_out_channels: [4, 8]\n")
    overrides = parse_overrides(["--max_train_steps", "9", "--use_ema", "--seed=3", "--mixed_precision", "no",
                                 "--export_dir", "null", "--data", "123"])
    config = load_config(DDPMConfig, path, overrides)
    assert config.mixed_precision == "no" and config.export_dir is None and config.data == "123"
    assert config.max_train_steps == 9 and config.seed == 3 and config.use_ema is True
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.block_out_channels == [4, 8]
    assert config.pipeline_dir.name == "pipeline"


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("max_train_steps: 5\nlearnig_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config key 'learnig_rate' in .*bad.yaml"):
        load_config(DDPMConfig, path)
    with pytest.raises(ValueError, match="unknown config key 'nope' in command-line overrides"):
        load_config(DDPMConfig, None, {"nope": 1})


def test_wrong_types_and_values_are_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("max_train_steps: many\n")
    with pytest.raises(ValueError, match="'max_train_steps' .* expects"):
        load_config(TrainingConfig, path)
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        TrainingConfig(mixed_precision="fp8")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(TrainingConfig, tmp_path / "missing.yaml")
    path.write_text("mixed_precision: no\n")
    with pytest.raises(ValueError, match="quote it"):
        load_config(TrainingConfig, path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(TrainingConfig, path)
    with pytest.raises(ValueError, match="--key value"):
        parse_overrides(["max_train_steps", "3"])
