"""Shared fixtures for the selfgen test suite.

Exactness policy. Reload and resume round trips assert **weights, optimizer state and sampled
noise** bit for bit (`torch.equal`, `np.testing.assert_array_equal`): those are copies, and a
copy that differs in one bit is a bug. Outputs of float *computation* (a pipeline's images, a
model's forward pass) are compared with `torch.testing.assert_close` at float32's default
tolerance (rtol 1.3e-6, atol 1e-5) unless a test states another: float kernels may pick
different code paths for different allocations or reorder reductions on a busy machine, so
bit-equality of computed outputs is not a property we can promise.
"""
import importlib.util
import os
from pathlib import Path

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


@pytest.fixture
def benchmark_module():
    """Load ``benchmarks/<name>.py`` (a script, not a package module) as a module, for tests of its functions."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
