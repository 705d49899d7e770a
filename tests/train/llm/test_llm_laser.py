"""LaSeR's last-token self-reward (= a direct forward pass), its balanced MSE term and config errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from selfgen.train.llm.laser import LaSeRConfig, LaSeRObjective, LaSeRTrainer, balanced_weights, self_reward_aucs

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
needs_asset = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    config = LaSeRConfig(
        output_dir=str(tmp_path_factory.mktemp("laser")), max_digits=2, eval_problems=2, samples_per_problem=2,
        max_new_tokens=24, best_of_n=2, best_of_n_problems=2, reference_logprob=-12.0,
    )
    return LaSeRTrainer(model=str(ASSET), task="arith", config=config)


@needs_asset
def test_last_token_score_equals_a_direct_forward_pass(trainer):
    rollouts = [r for r in trainer.solve(trainer.task.sample(3, seed=1), seed=0) if r.finished]
    assert rollouts and all(r.completion_ids[-1] == trainer.tokenizer.eos_token_id for r in rollouts)
    scores = trainer.self_reward_scores(trainer.policy, rollouts)
    token = trainer.tokenizer.convert_tokens_to_ids("<unk>")
    for rollout, score in zip(rollouts, scores):
        ids = torch.tensor([rollout.prompt_ids + rollout.completion_ids + [token]])
        with torch.no_grad():
            logprob = trainer.policy(ids).logits[0, -2].float().log_softmax(-1)[token]
        assert float(score) == pytest.approx(0.1 * (float(logprob) + 12.0), abs=1e-4)


@needs_asset
def test_mse_term_is_alpha_times_the_balanced_squared_error(trainer):
    rollouts = trainer.solve(trainer.task.sample(2, seed=2), seed=0)
    samples = [trainer.policy_sample(r, 0.0, float(i % 2)) for i, r in enumerate(rollouts)]
    batch = trainer.collator()(samples)
    options = dict(beta_v=0.1, reference_logprob=-12.0, balanced=True)
    with torch.no_grad():
        with_mse, logs = LaSeRObjective(None, beta=0.0, alpha=0.5, **options).compute_loss(trainer.policy, batch)
        without, _ = LaSeRObjective(None, beta=0.0, alpha=0.0, **options).compute_loss(trainer.policy, batch)
        scores = trainer.self_reward_scores(trainer.policy, rollouts)
    finished, verifier = batch["finished"], batch["verifier_reward"]
    expected = (balanced_weights(verifier, finished) * (scores - verifier) ** 2).sum() / finished.sum()
    assert float(with_mse - without) == pytest.approx(0.5 * float(expected), rel=1e-4)
    assert logs["self_reward_mse"] == pytest.approx(float(expected), rel=1e-4)


def test_balanced_weights_give_each_class_equal_total_weight():
    weights = balanced_weights(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]))
    assert weights.tolist() == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3, 0.0])
    assert balanced_weights(torch.tensor([1.0, 1.0]), torch.ones(2)).tolist() == [1.0, 1.0]


@needs_asset
def test_best_of_n_table_picks_the_highest_self_reward(trainer):
    table = trainer.best_of_n_table(trainer.eval_set)
    n, scores, correct = trainer.config.best_of_n, table["scores"], table["correct"]
    assert len(scores) == len(correct) == n * len(trainer.eval_set) and (table["problem"] == [0, 0, 1, 1]).all()
    for index in range(len(trainer.eval_set)):
        group = slice(index * n, (index + 1) * n)
        assert table["best"][index] == correct[group][scores[group].argmax()]
        assert table["oracle"][index] == correct[group].any() and table["sample"][index] == correct[group][0]
    metrics = trainer.best_of_n_metrics(trainer.eval_set)
    assert metrics["sample_accuracy"] == pytest.approx(correct.mean())
    assert {"self_reward_auc", "within_problem_auc"} <= set(metrics)


def test_self_reward_aucs_on_hand_made_scores():
    scores = np.array([0.9, 0.1, -np.inf, 0.5, 0.3, 0.2, 0.7, 0.8])
    correct = np.array([True, False, True, False, True, False, True, True])
    problem = np.array([0, 0, 0, 1, 1, 1, 2, 2])  # problem 2 has no wrong sample: not in the within-problem mean
    aucs = self_reward_aucs(scores, correct, problem)
    # finished right {0.9, 0.3, 0.7, 0.8} vs wrong {0.1, 0.5, 0.2}: 0.3 loses to 0.5 only -> 11 of 12 pairs
    assert aucs["self_reward_auc"] == pytest.approx(11 / 12)
    assert aucs["within_problem_auc"] == pytest.approx((1.0 + 0.5) / 2)  # the unfinished right sample is dropped


def test_laser_config_errors_name_the_field():
    with pytest.raises(ValueError, match="best_of_n"):
        LaSeRConfig(best_of_n=1)
    with pytest.raises(ValueError, match="self_reward_kl_coef"):
        LaSeRConfig(self_reward_kl_coef=0.0)


@needs_asset
def test_unknown_self_reward_token_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="self_reward_token"):
        LaSeRTrainer(model=str(ASSET), config=LaSeRConfig(output_dir=str(tmp_path), self_reward_token="<zz>", reference_logprob=-1.0))
