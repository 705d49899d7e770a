"""Co-Reward's cross-vote rewards on hand-made answers, and the tasks' exact rephrasings."""

import random
from pathlib import Path

import pytest

from selfgen.data.problems import Problem, write_problems
from selfgen.data.tasks import ArithmeticTask, CountdownTask, JsonlTask, Task
from selfgen.train.llm.co_reward import CoRewardConfig, CoRewardTrainer, cross_vote_rewards
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
