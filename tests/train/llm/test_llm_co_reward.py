"""Co-Reward's cross-vote rewards on hand-made answers, and the tasks' exact rephrasings."""

import random
from pathlib import Path

import pytest
import torch

from selfgen.data.problems import Problem, write_problems
from selfgen.data.tasks import ArithmeticTask, CountdownTask, JsonlTask, Task
from selfgen.train.llm.co_reward import CoRewardConfig, CoRewardTrainer, cross_vote_rewards, label_signal
from selfgen.train.llm.rollout import Rollout

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"


def test_cross_vote_rewards_each_phrasing_with_the_other_majority():
    original = ["S:..\nA:5", "A:5", "A:7", "no answer"]  # majority 5
    rephrased = ["A:7", "A:0007", "A:5", "A:8"]  # majority 7 ("0007" votes with "7")
    to_original, to_rephrased, original_label, rephrased_label = cross_vote_rewards(original, rephrased)
    assert to_original == [0.0, 0.0, 1.0, 0.0]  # judged by the rephrasing's majority 7
    assert to_rephrased == [0.0, 0.0, 1.0, 0.0]  # judged by the original's majority 5
    assert (original_label, rephrased_label) == ("5.0", "7.0")
    assert cross_vote_rewards(["x", "y"], ["A:1", "A:1"])[1] == [0.0, 0.0]  # no pseudo-label from answerless rollouts


def test_label_signal_aligns_with_the_verifier_only_where_the_vote_is_right():
    # q1: the vote is right (5), the rephrased group is mixed -> label-free advantages = verifier's
    right = (["5", "5"], ["5", "7"], "5")
    # q2: the vote is wrong (4) and the rephrased group has the right 3 -> advantages reversed
    wrong = (["4", "4"], ["4", "3"], "3")
    for cases, expected in (([right], 1.0), ([wrong], -1.0), ([right, wrong], 0.0)):
        signal = label_signal(*map(list, zip(*cases)))
        torch.testing.assert_close(signal["alignment"], expected, atol=1e-3, rtol=0)
        torch.testing.assert_close(signal["self_vote_alignment"], expected, atol=1e-3, rtol=0)
    both = label_signal(*map(list, zip(right, wrong)))
    assert both["pass_at_1"] == 0.5 and both["majority_at_k"] == 0.5 and both["pseudo_label_accuracy"] == 0.5
    assert both["reward_agreement"] == 0.5 and both["mixed_groups"] == 0.5
    # a confident error in the originals with a right majority on the rephrasing: cross-vote and self-vote differ
    split = label_signal([["9", "9", "1"]], [["1", "1", "2"]], ["1"])
    assert split["majority_at_k"] == 0.0 and split["pseudo_label_accuracy"] == 0.5
    # originals judged by 1: [0, 0, 1] mixed; rephrasings judged by 9: all 0; self-votes [1, 1, 0] in both
    assert (split["mixed_groups"], split["mixed_cross_vote_groups"], split["mixed_self_vote_groups"]) == (1.0, 0.5, 1.0)
    # originals: cross-vote = verifier, self-vote reversed; rephrasings: cross-vote flat (label 9 matches none),
    # self-vote = verifier; both groups carry the same verifier norm
    torch.testing.assert_close(split["alignment"], 0.5, atol=1e-3, rtol=0)
    torch.testing.assert_close(split["self_vote_alignment"], 0.0, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="rollouts per phrasing"):
        label_signal([["1", "2"]], [["1"]], ["1"])
    with pytest.raises(ValueError, match="truths"):
        label_signal([], [], [])


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_trainer_rewards_pair_each_question_with_its_rephrasing(tmp_path):
    config = CoRewardConfig(output_dir=str(tmp_path), problems_per_iteration=2, eval_problems=2, samples_per_problem=2)
    trainer = CoRewardTrainer(model=str(ASSET), task="arith", config=config)
    problems = trainer.problems(1)
    assert len(problems) == 4 and [p.metadata["original"] for p in problems[2:]] == [p.question for p in problems[:2]]
    right, wrong = f"A:{problems[0].answer}", "A:-1"
    texts = [right, wrong, wrong, wrong, right, right, wrong, wrong]  # q0, q1, q0', q1'
    rollouts = [Rollout(0, "", text, [1], [2], [0.0]) for text in texts]
    rewards = trainer.rewards(problems, rollouts)
    # q0's majority (first seen in its 1-1 tie) is right and q0''s is right: each rewards the other's right
    # rollouts; q1 and q1' agree on the wrong -1, which rewards every rollout of both (a confident error)
    assert rewards == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert trainer.label_logs["pseudo_label_accuracy"] == 0.5  # q0's two labels right, q1's two wrong
    with pytest.raises(ValueError, match="originals"):
        trainer.rewards(problems[::-1], rollouts)


@pytest.mark.parametrize("task", [ArithmeticTask("add", 1, 4), ArithmeticTask("mul", 1, 3), CountdownTask(num_numbers=3)])
def test_rephrasings_are_exact_seeded_and_new(task):
    problems = task.sample(40, seed=5)
    rephrased = task.rephrasings(problems, seed=1)
    assert [p.question for p in rephrased] == [p.question for p in task.rephrasings(problems, seed=1)]
    for problem, rephrasing in zip(problems, rephrased):
        assert rephrasing.answer == problem.answer and rephrasing.metadata["original"] == problem.question
        assert rephrasing.id == f"{problem.id}-r"
        assert task.verify(rephrasing, task.worked_solution(problem))  # the original's solution answers it
    assert sum(r.question != p.question for p, r in zip(problems, rephrased)) >= 38
    if isinstance(task, ArithmeticTask) and task.op == "add":
        assert {r.metadata["rephrasing"] for r in rephrased} == {"swap", "pad"}
        assert task.rephrase(Problem("12+345", "357", "x"), random.Random(0)).question in ("345+12", "012+345")


def test_jsonl_rephrasing_comes_from_the_file(tmp_path):
    path = tmp_path / "problems.jsonl"
    write_problems([Problem("two plus two", "4", "a", {"rephrasing": "2+2"}), Problem("3+3", "6", "b")], path)
    task = JsonlTask(path=str(path))
    rephrased = task.rephrase(task.problems[0], random.Random(0))
    assert (rephrased.question, rephrased.answer, rephrased.metadata["original"]) == ("2+2", "4", "two plus two")
    with pytest.raises(ValueError, match="'b' has no 'rephrasing'"):
        task.rephrase(task.problems[1], random.Random(0))
    with pytest.raises(ValueError, match="no exact rephrasings"):
        Task().rephrase(task.problems[0], random.Random(0))


def test_mix_configs_are_a_matched_pair():
    """Co-Reward and its GRPO control on the 3/4-digit mix: same distribution, rollouts, steps and lr."""
    from selfgen.train.config import load_config
    from selfgen.train.llm.grpo import GRPOConfig

    configs = ASSET.parents[1] / "configs"
    co = load_config(CoRewardConfig, configs / "co_reward_arith_llama_mix.yaml")
    grpo = load_config(GRPOConfig, configs / "grpo_arith_llama_mix.yaml")
    assert (co.min_digits, co.max_digits) == (grpo.min_digits, grpo.max_digits) == (3, 4)
    assert 2 * co.problems_per_iteration * co.samples_per_problem == grpo.problems_per_iteration * grpo.samples_per_problem
    for field in ("iterations", "max_train_steps", "train_batch_size", "learning_rate", "beta", "seed", "model"):
        assert getattr(co, field) == getattr(grpo, field), field


def test_vote_ceiling_benchmark_pairs_majority_of_k_with_greedy(benchmark_module):
    import numpy as np

    bench = benchmark_module("llm_label_signal")
    groups, truths = [["1", "5", "5", "5"], ["2", "2", "2", None]], ["5", "3"]  # q0: 2-vote tie -> "1" (first seen)
    greedy = np.array([0.0, 1.0])
    nested = {k: bench.summarise([g[:k] for g in groups], [g[:k] for g in groups], truths, greedy) for k in (2, 4)}
    assert nested[2]["majority_minus_greedy"][0] == pytest.approx(-0.5)  # majority right 0 of 2, greedy 1 of 2
    assert nested[4]["majority_minus_greedy"][0] == pytest.approx(0.0)  # the 4-vote fixes q0, greedy keeps q1
    assert nested[4]["greedy"] == pytest.approx(0.5) and nested[4]["point"]["majority_at_k"] == pytest.approx(0.5)
    low, high = nested[2]["majority_minus_greedy"][1:]
    assert low <= -0.5 <= high


def test_rephrasing_styles_restrict_the_draw_and_leave_the_default_draw_unchanged():
    task = ArithmeticTask("add", 4, 4)
    problems = task.sample(40, seed=5) + [Problem("1234+1234", "2468", "same")]
    swapped = task.rephrasings(problems, seed=1, styles=["swap"])
    assert {r.metadata["rephrasing"] for r in swapped} == {"swap"}
    assert all(r.question == "+".join(p.question.split("+")[::-1]) for p, r in zip(problems, swapped))
    padded = task.rephrasings(problems, seed=1, styles=["pad"])
    assert all(r.question.startswith("0") and r.metadata["rephrasing"] == "pad" for r in padded)
    # both styles named: the same draws as the default for every question the swap changes
    both, default = task.rephrasings(problems[:40], 1, ["swap", "pad"]), task.rephrasings(problems[:40], 1)
    assert [r.question for r in both] == [r.question for r in default]
    assert task.rephrasings(problems[40:], 1)[0].metadata["rephrasing"] == "pad"  # a+a: the default never "swaps"


@pytest.mark.parametrize("styles, match", [([], "rephrasings must"), (["reverse"], r"unknown: \['reverse'\]")])
def test_rephrasings_option_refuses_empty_or_unknown_styles_naming_the_field(tmp_path, styles, match):
    if not styles:
        with pytest.raises(ValueError, match=match):
            CoRewardConfig(output_dir=str(tmp_path), rephrasings=styles)
        return
    config = CoRewardConfig(output_dir=str(tmp_path), problems_per_iteration=2, eval_problems=2, rephrasings=styles)
    with pytest.raises(ValueError, match=match):
        CoRewardTrainer(model=str(ASSET), task="arith", config=config)
    with pytest.raises(ValueError, match="rephrasings must"):
        CountdownTask(num_numbers=3).check_rephrasing_styles(["swap"])


def test_trainer_rephrases_with_the_configured_styles(tmp_path):
    config = CoRewardConfig(output_dir=str(tmp_path), problems_per_iteration=8, eval_problems=4, rephrasings=["swap"])
    trainer = CoRewardTrainer(model=str(ASSET), task="arith", config=config)
    problems = trainer.problems(1)
    assert {p.metadata["rephrasing"] for p in problems[8:] + trainer.rephrased_eval_set} == {"swap"}


def test_v3_long_configs_are_a_matched_pair_with_swap_rephrasings():
    """Co-Reward and GRPO at 8x the 40-step budget on v3: same rollouts, steps, lr; swap-only rephrasings."""
    from selfgen.train.config import load_config
    from selfgen.train.llm.grpo import GRPOConfig

    configs = ASSET.parents[1] / "configs"
    co = load_config(CoRewardConfig, configs / "co_reward_arith_llama_v3_long.yaml")
    grpo = load_config(GRPOConfig, configs / "grpo_arith_llama_v3_long.yaml")
    assert co.rephrasings == ["swap"] and co.model == grpo.model == "assets/lm-arith-llama-v3"
    assert 2 * co.problems_per_iteration * co.samples_per_problem == grpo.problems_per_iteration * grpo.samples_per_problem
    assert grpo.iterations * grpo.max_train_steps == 320
    for field in ("iterations", "max_train_steps", "train_batch_size", "learning_rate", "beta", "seed", "min_digits", "max_digits"):
        assert getattr(co, field) == getattr(grpo, field), field
