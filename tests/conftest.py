import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_ddpm_config(tmp_path):
    """A DDPM digits config small enough to train a few steps in about a second."""
    from selfgen.train.ddpm import DDPMConfig

    def make(**overrides):
        values = dict(
            output_dir=str(tmp_path / "run"),
            resolution=8,
            block_out_channels=[8, 16],
            norm_num_groups=4,
            train_batch_size=16,
            max_train_steps=10,
            learning_rate=1e-3,
            logging_steps=1,
            checkpointing_steps=0,
            report_to=None,
        )
        values.update(overrides)
        return DDPMConfig(**values)

    return make
