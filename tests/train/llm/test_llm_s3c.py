"""S3c-Math: the correction example's loss mask, located wrong steps, correction statistics, one tiny round."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from selfgen.data.problems import Problem
from selfgen.data.tasks import get_task
from selfgen.train.llm.objectives import SFTCollator, SFTObjective, token_logprobs
from selfgen.train.llm.s3c import (
    S3cConfig,
    S3cTrainer,
    correction_example,
    correction_stats,
    corrections,
    located_wrong_step,
)

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
needs_asset = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
STEPS = ["7+5+0=12", "4+8+1=13"]


def test_correction_example_text():
    pair = correction_example("Q:47+85\n", STEPS, "132", 1, "4+8+1=14")
    assert pair.completion == "S:7+5+0=12,4+8+1=14!4+8+1=13\nA:132"
    start, end, weight = pair.weighted_spans[0]
    assert pair.completion[start:end] == "4+8+1=14" and weight == 0.0
    with pytest.raises(ValueError, match="wrong_step must differ"):
        correction_example("Q:47+85\n", STEPS, "132", 1, "4+8+1=13")


@needs_asset
def test_wrong_step_tokens_are_ignored_by_the_loss():
    tokenizer = AutoTokenizer.from_pretrained(ASSET)
    tokenizer.padding_side = "left"
    pair = correction_example("Q:47+85\n", STEPS, "132", 1, "4+8+1=14")
    batch = SFTCollator(tokenizer, 128)([pair])
    ids, weights, mask = batch["input_ids"][0], batch["loss_weights"][0], batch["completion_mask"][0]
    ignored = [i for i in range(len(ids)) if mask[i] and weights[i] == 0]
    # exactly the wrong step's tokens carry no loss; the mark, the correction and eos do
    assert tokenizer.decode(ids[ignored]) == "4+8+1=14"
    assert ignored == list(range(ignored[0], ignored[0] + len(ignored)))
    trained = tokenizer.decode(ids[[i for i in range(ignored[-1] + 1, len(ids)) if mask[i] and weights[i] > 0]], skip_special_tokens=True)
    assert trained == "!4+8+1=13\nA:132"
    # the loss is the mean NLL over the other completion tokens only
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ASSET)
    loss, _ = SFTObjective().compute_loss(model, batch)
    logprobs = token_logprobs(model, batch["input_ids"], batch["attention_mask"])[0]
    keep = (mask[1:] * weights[1:]).bool()
    torch.testing.assert_close(loss, -logprobs[keep].mean(), rtol=1e-5, atol=1e-6)
    assert not keep[[i - 1 for i in ignored]].any()


def test_located_wrong_step_and_stats():
    task = get_task("add", min_digits=2, max_digits=2)
    problem = Problem("47+85", "132", "p")
    assert located_wrong_step(task, problem, "S:7+5+0=12,4+8+1=13\nA:132") is None  # right
    assert located_wrong_step(task, problem, "S:7+5+0=12,4+8+1=14\nA:142") == 1
    assert located_wrong_step(task, problem, "S:7+5+0=12\nA:142") is None  # the wrong step was never written
    assert corrections("S:7+5+0=12,4+8+1=14!4+8+1=13\nA:132") == [(1, "4+8+1=14", "4+8+1=13")]
    texts = ["S:7+5+0=12,4+8+1=14!4+8+1=13\nA:132", "S:7+5+0=12!7+5+0=13,4+8+1=14\nA:142", "S:7+5+0=12,4+8+1=13\nA:132"]
    stats = correction_stats(task, [problem] * 3, texts, [True, False, True])
    assert stats["correction_rate"] == pytest.approx(2 / 3)
    assert stats["correction_fix_rate"] == pytest.approx(1 / 3)  # wrong step, marked, answer right
    assert stats["correction_false_alarm_rate"] == pytest.approx(1 / 3)  # a right step marked
    assert stats["correction_accuracy"] == 0.5
    with pytest.raises(ValueError, match="mode"):
        S3cConfig(mode="masked")


@needs_asset
@pytest.mark.parametrize("mode", ["s3c", "clean"])
def test_one_round_end_to_end(tmp_path, mode):
    config = S3cConfig(
        output_dir=str(tmp_path / "run"), mode=mode, problems_per_iteration=24, eval_problems=4, max_train_steps=2,
        train_batch_size=4, max_new_tokens=48, logging_steps=1, eval_samples=2,
    )
    trainer = S3cTrainer(model=str(ASSET), config=config)
    report = trainer.train()
    record = report[1]
    assert record["located_wrong_steps"] > 0  # the base model errs on the hard split
    assert (record["correction_examples"] > 0) == (mode == "s3c")
    assert record["train_examples"] == 24 + record["correction_examples"]
    assert (tmp_path / "run" / "eval_items-1.jsonl").is_file()
    assert "sampled_correction_fix_rate" in record
    assert len((tmp_path / "run" / "eval_samples-1.jsonl").read_text().splitlines()) == 4 * 2
