"""Iterative Deepening Sampling and Self-PRM: budgets, segments, aggregation, the ProcessBench metric,
self-scores, and one tiny Self-PRM run."""

from pathlib import Path

import pytest

from selfgen.data.reasoning import Feedback
from selfgen.data.problems import Problem
from selfgen.data.tasks import get_task
from selfgen.train.llm.iterative_deepening import aggregate, final_answer, iterative_deepening, segment_budgets
from selfgen.train.llm.prompts import PromptFormat
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.rewards import canonical_answer
from selfgen.train.llm.self_prm import (
    SelfPRMConfig,
    SelfPRMTrainer,
    rerank_choice,
    self_judge,
    self_score,
    step_error_metrics,
)

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
needs_asset = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")


def test_segment_budgets():
    assert segment_budgets(16, 2.0, 100) == [16, 32, 52]
    assert segment_budgets(10, 1.5, 100, max_rounds=3) == [10, 15, 23]
    assert segment_budgets(30, 2.0, 20) == [20]
    with pytest.raises(ValueError, match="growth"):
        segment_budgets(16, 0.5, 100)


@needs_asset
def test_iterative_deepening_segments():
    model, tokenizer = load_policy(ASSET, "float32")
    task = get_task("add")
    problems = [Problem("47+85", "132", "a"), Problem("1+5887", "5888", "b")]
    verify = lambda problem, text: task.verify(problem, text)  # noqa: E731
    episodes = iterative_deepening(
        model, tokenizer, PromptFormat(), problems, initial_budget=12, growth=2.0, max_new_tokens=60, num_samples=2, verify=verify
    )
    assert [e.problem_index for e in episodes] == [0, 0, 1, 1]
    for episode in episodes:
        assert len(episode.turns) == 3 and all(n <= b for n, b in zip(episode.new_tokens, [12, 24, 24]))
        assert episode.new_tokens[0] == 12 and "A:" not in episode.texts[0]  # the trigger interrupts the attempt
        assert episode.turns[1].rollout.prompt.endswith(episode.texts[0] + "\nR:\n")  # ... and the model continues
        assert sum(episode.new_tokens) <= 60
    # the answer comes from the last segment that gives one
    episodes[0].turns[-1].answer = None
    assert final_answer(episodes[0]) == episodes[0].answers[1]


def test_aggregate():
    texts = ["7", "07", "8"]
    assert aggregate(texts) == canonical_answer("7")  # 7 and 07 vote together
    assert aggregate(texts, "best", scores=[0.1, 0.2, 0.9]) == canonical_answer("8")
    with pytest.raises(ValueError, match="one score per answer"):
        aggregate(texts, "best")


def test_step_error_metrics_and_scores():
    judgements = [Feedback(False, 2), Feedback(False, 1), Feedback(True), Feedback(True), Feedback(False), None]
    labels = [2, 2, 3, -1, -1, 0]
    metrics = step_error_metrics(judgements, labels)
    # erroneous: exact step hit, wrong step, judged right, no verdict -> 1/4; right: 1 of 2
    assert metrics["error_accuracy"] == 0.25 and metrics["correct_accuracy"] == 0.5
    assert metrics["f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert metrics["precision"] == 0.5  # two judged right, one of them is
    assert metrics["error_recall"] == 0.5  # flagged F:N: the first two of four erroneous (no verdict is not a flag)
    text = "S:1+1=2,2+2=4,3+3=6,4+4=8\nA:8"
    assert self_score(Feedback(True), text) == 1.0 and self_score(Feedback(False, 3), text) == 0.5
    assert self_score(Feedback(False), text) == 0.0 and self_score(None, text) == 0.0
    # the top-scored answers vote; the overall majority (9) is outranked
    assert rerank_choice(["A:9", "A:9", "A:9", "A:7", "A:7", "A:8"], [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]) == canonical_answer("7")


@needs_asset
def test_self_prm_tiny_run(tmp_path):
    config = SelfPRMConfig(
        output_dir=str(tmp_path / "run"), iterations=1, problems_per_iteration=4, samples_per_problem=2, eval_problems=3,
        rerank_samples=2, judge_problems=16, judge_train_steps=2, max_train_steps=2, train_batch_size=4, max_new_tokens=48,
        logging_steps=1,
    )
    trainer = SelfPRMTrainer(model=str(ASSET), config=config)
    report = trainer.train()
    assert "base_accuracy" in report[0] and "base_probe_f1" not in report[0]  # the untaught base is not probed
    for record in report.history:
        for key in ("probe_f1", "probe_precision", "self_rerank_accuracy", "majority_accuracy", "pass_at_n"):
            assert key in record
        assert record["pass_at_n"] >= record["majority_accuracy"] and record["pass_at_n"] >= record["self_rerank_accuracy"]
    assert len(trainer.probe_set) == 6 and (tmp_path / "run" / "self_prm-1.jsonl").is_file()
    judgements = self_judge(trainer.policy, trainer.tokenizer, ["1+2"], ["S:1+2=3\nA:3"])
    assert len(judgements) == 1
