"""LaSeR's last-token self-reward (= a direct forward pass), its balanced MSE term and config errors."""

from pathlib import Path
from types import SimpleNamespace

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
def test_mse_term_is_alpha_times_the_batch_weighted_squared_error(trainer):
    rollouts = trainer.solve(trainer.task.sample(2, seed=2), seed=0)
    samples = [trainer.policy_sample(r, 0.0, float(i % 2)) for i, r in enumerate(rollouts)]
    trainer.weigh_samples(samples)
    batch = trainer.collator()(samples)
    options = dict(beta_v=0.1, reference_logprob=-12.0)
    with torch.no_grad():
        with_mse, logs = LaSeRObjective(None, beta=0.0, alpha=0.5, **options).compute_loss(trainer.policy, batch)
        without, _ = LaSeRObjective(None, beta=0.0, alpha=0.0, **options).compute_loss(trainer.policy, batch)
        alone, _ = LaSeRObjective(None, beta=0.0, alpha=0.5, self_reward_only=True, **options).compute_loss(trainer.policy, batch)
        scores = trainer.self_reward_scores(trainer.policy, rollouts)
    finished, verifier = batch["finished"], batch["verifier_reward"]
    expected = (balanced_weights(verifier, finished) * (scores - verifier) ** 2).mean()
    assert float(with_mse - without) == pytest.approx(0.5 * float(expected), rel=1e-4)
    assert float(alone) == pytest.approx(0.5 * float(expected), rel=1e-4)  # no policy-gradient term left
    assert logs["self_reward_mse"] == pytest.approx(float(expected), rel=1e-4)


@needs_asset
def test_self_reward_only_gradient_ignores_the_advantages(trainer):
    rollouts = trainer.solve(trainer.task.sample(2, seed=3), seed=0)
    objective = LaSeRObjective(None, beta=0.0, alpha=0.1, beta_v=0.1, reference_logprob=-12.0, self_reward_only=True)
    grads = []
    for advantage in (0.0, 5.0):
        samples = [trainer.policy_sample(r, advantage, float(i % 2)) for i, r in enumerate(rollouts)]
        trainer.weigh_samples(samples)
        trainer.policy.zero_grad()
        objective.compute_loss(trainer.policy, trainer.collator()(samples))[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.policy.parameters() if p.grad is not None]))
    trainer.policy.zero_grad()
    assert grads[0].abs().sum() > 0  # the MSE does train the model
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-8)


def test_weights_are_balanced_over_the_whole_rollout_batch():
    from selfgen.train.llm.objectives import PolicySample

    rewards, finished = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    samples = [PolicySample([1], [2], 0.0, extras={"verifier_reward": r, "finished": f}) for r, f in zip(rewards, finished)]
    LaSeRTrainer.weigh_samples(SimpleNamespace(config=LaSeRConfig()), samples)
    # 5 finished: 2 right share 5/2, 3 wrong share 5/2; a minibatch of the first two alone would give 1 and 1
    assert [s.extras["self_reward_weight"] for s in samples] == pytest.approx([1.25, 5 / 6, 5 / 6, 5 / 6, 1.25, 0.0])


@needs_asset
def test_reasoning_warmup_turns_the_mse_off_in_early_iterations(trainer):
    config = trainer.config
    config.problems_per_iteration, config.reasoning_warmup_iterations = 2, 1
    try:
        warm, after = trainer.build_round(1), trainer.build_round(2)
    finally:
        config.problems_per_iteration, config.reasoning_warmup_iterations = 256, 0
    assert warm.objective.alpha == 0.0 and after.objective.alpha == config.self_reward_loss_coef
    weights = torch.tensor([s.extras["self_reward_weight"] for s in after.dataset])
    verifier = torch.tensor([s.extras["verifier_reward"] for s in after.dataset])
    finished = torch.tensor([s.extras["finished"] for s in after.dataset])
    torch.testing.assert_close(weights, balanced_weights(verifier, finished))


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
        assert table["confident"][index] == correct[group][table["confidence"][group].argmax()]
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
    with pytest.raises(ValueError, match="reasoning_warmup_iterations"):
        LaSeRConfig(reasoning_warmup_iterations=-1)
    with pytest.raises(ValueError, match="self_reward_only"):
        LaSeRConfig(self_reward_only=True, self_reward_loss_coef=0.0)


@needs_asset
def test_unknown_self_reward_token_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="self_reward_token"):
        LaSeRTrainer(model=str(ASSET), config=LaSeRConfig(output_dir=str(tmp_path), self_reward_token="<zz>", reference_logprob=-1.0))
