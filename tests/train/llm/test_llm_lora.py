"""Iterative recipes with ``lora_rank > 0``: each round trains a fresh adapter, merges it, and the
exported model is a plain transformers causal LM whose tied embedding was never touched."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from selfgen.train.llm import STaRConfig, STaRTrainer

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
pytestmark = [
    pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]
pytest.importorskip("peft")


def test_star_with_lora_merges_each_round_and_exports_a_plain_model(tmp_path):
    config = STaRConfig(
        output_dir=str(tmp_path / "run"), iterations=2, problems_per_iteration=8, eval_problems=4,
        samples_per_problem=1, max_train_steps=3, train_batch_size=4, max_new_tokens=32, max_digits=2,
        learning_rate=1e-2, lora_rank=4, logging_steps=1,
    )
    trainer = STaRTrainer(model=str(ASSET), task="arith", config=config)
    report = trainer.train()
    assert [record["iteration"] for record in report.history] == [0, 1, 2]
    assert not any("lora" in name for name, _ in trainer.policy.named_parameters())

    base, exported = load_file(ASSET / "model.safetensors"), load_file(report.model_dir / "model.safetensors")
    assert exported.keys() == base.keys()
    torch.testing.assert_close(exported["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    changed = [key for key in base if "q_proj" in key and not torch.equal(base[key], exported[key])]
    assert changed, "the merged adapters changed no attention projection"

    reloaded = AutoModelForCausalLM.from_pretrained(report.model_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, trainer.policy(ids).logits)
