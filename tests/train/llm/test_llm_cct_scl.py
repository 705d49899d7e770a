"""CCT and SCL: their training data is built as the papers say, the controls differ only where they
should, and one tiny iteration of each runs end to end; the shared correction seed round."""

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from selfgen.data.reasoning import parse_feedback, step_feedback
from selfgen.data.tasks import REVISION_MARK, ArithmeticTask, solution_steps
from selfgen.train.llm.cct import CCTConfig, CCTTrainer, cct_examples
from selfgen.train.llm.correction import correction_examples, wrong_attempt
from selfgen.train.llm.prompts import PromptFormat
from selfgen.train.llm.revision import Episode, Turn
from selfgen.train.llm.rollout import Rollout
from selfgen.train.llm.scl import SCLConfig, SCLTrainer, flip_pairs, verifier_pairs

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
needs_asset = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
TASK = ArithmeticTask("add", 2, 3)
FMT = PromptFormat()


def test_wrong_attempts_are_wrong_and_the_rule_critic_names_the_corrupted_step():
    rng = random.Random(0)
    for problem in TASK.sample(40, 1):
        attempt = wrong_attempt(TASK, problem, rng)
        assert not TASK.verify(problem, attempt)
        reference, steps = solution_steps(TASK.worked_solution(problem)), solution_steps(attempt)
        first = next(k for k in range(len(steps)) if steps[k] != reference[k])
        assert step_feedback(TASK, problem, attempt).step == first + 1


def test_correction_seed_examples_keep_right_attempts_and_fix_wrong_ones():
    problems = TASK.sample(200, 2)
    examples = correction_examples(TASK, problems, FMT, seed=3, turn_share=0.6)
    kinds = {"plain": 0, "feedback": 0, "revision": 0}
    for problem, pair in zip(problems, examples):
        solution, prompt = TASK.worked_solution(problem), FMT.prompt(problem.question)
        if pair.prompt == prompt:
            kinds["plain"] += 1
            assert pair.completion == solution
            continue
        attempt = pair.prompt[len(prompt) :].split("\nF:")[0].split(REVISION_MARK)[0]
        if pair.prompt.endswith("\nF:"):  # write the feedback: the rule critic's verdict on the attempt
            kinds["feedback"] += 1
            assert parse_feedback(pair.completion) == step_feedback(TASK, problem, attempt)
        else:  # a revision turn, with or without feedback: always the reference solution
            kinds["revision"] += 1
            assert pair.prompt.endswith(REVISION_MARK) and pair.completion == solution
            shown = parse_feedback(pair.prompt[len(prompt) + len(attempt) :])
            assert shown is None or shown.correct == TASK.verify(problem, attempt)
    assert min(kinds.values()) > 20 and abs(kinds["plain"] / len(examples) - 0.4) < 0.1
    with pytest.raises(ValueError, match="seed_turn_share"):
        correction_examples(TASK, problems, FMT, seed=3, turn_share=1.5)


def test_cct_keeps_right_own_answers_and_replaces_wrong_ones_by_the_reference():
    problems = TASK.sample(2, 4)
    trainer = SimpleNamespace(task=TASK, format=FMT)
    right = TASK.worked_solution(problems[0])
    attempts = [[right, "S:1+1=3\nA:3"], ["S:9\nA:1"]]
    confidence, critique = cct_examples(trainer, problems, attempts, [[True, False], [False]])
    assert [(p.prompt, p.completion) for p in confidence] == [(FMT.revision(problems[0].question, right), right)]
    assert [(p.prompt, p.completion) for p in critique] == [
        (FMT.revision(problems[0].question, "S:1+1=3\nA:3"), right),
        (FMT.revision(problems[1].question, "S:9\nA:1"), TASK.worked_solution(problems[1])),
    ]


def _episode(problem, texts, correct):
    turns = [Turn(Rollout(0, "", t, [], [], []), None, ok) for t, ok in zip(texts, correct)]
    return Episode(0, problem, turns)


def test_scl_pairs_only_flips_on_the_plain_prompt():
    problem = TASK.sample(1, 5)[0]
    episodes = [
        _episode(problem, ["r1", "w2"], [True, False]),  # right -> wrong: prefer y1
        _episode(problem, ["w1", "r2"], [False, True]),  # wrong -> right: prefer y2
        _episode(problem, ["r1", "r2"], [True, True]),
        _episode(problem, ["w1", "w2"], [False, False]),
    ]
    prompts = [FMT.prompt(problem.question)] * 4
    pairs = flip_pairs(prompts, episodes)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [(prompts[0], "r1", "w2"), (prompts[0], "r2", "w1")]
    control = verifier_pairs("x", ["w1", "r1", "w2", "r2", "r3"], [False, True, False, True, True])
    assert [(p.chosen, p.rejected) for p in control] == [("r1", "w1"), ("r2", "w2")]


@needs_asset
def test_cct_and_its_sft_control_train_on_the_same_problems(tmp_path):
    tiny = dict(task="add_hard", problems_per_iteration=6, samples_per_problem=2, eval_problems=4, max_new_tokens=40)
    cct = CCTTrainer(model=str(ASSET), config=CCTConfig(output_dir=str(tmp_path / "a"), **tiny))
    sft = CCTTrainer(model=str(ASSET), config=CCTConfig(output_dir=str(tmp_path / "b"), examples="sft", **tiny))
    cct_round, sft_round = cct.build_round(1), sft.build_round(1)
    plain = [p for p in cct_round.dataset if not p.prompt.endswith(REVISION_MARK)]
    assert [(p.prompt, p.completion) for p in plain] == [(p.prompt, p.completion) for p in sft_round.dataset]
    assert len(cct_round.dataset) == 6 + 6 * 2 and cct_round.logs["confidence_examples"] + cct_round.logs["critique_examples"] == 12
    with pytest.raises(ValueError, match="examples must be one of"):
        CCTConfig(examples="both")


@needs_asset
def test_cct_with_seed_round_and_scl_run_end_to_end(tmp_path):
    tiny = dict(task="add_hard", problems_per_iteration=24, eval_problems=4, max_new_tokens=40, max_train_steps=2, train_batch_size=4)
    config = CCTConfig(output_dir=str(tmp_path / "cct"), samples_per_problem=1, seed_problems=8, seed_train_steps=1, **tiny)
    report = CCTTrainer(model=str(ASSET), config=config).train()
    assert [r["iteration"] for r in report.history] == [0, 1]
    assert report[0]["seed_examples"] == 8 and "base_confidence_level" in report[0]
    assert {"accuracy_t2", "critique_score_se", "rss"} <= set(report[1])
    for pairs in ("flips", "verifier"):
        config = SCLConfig(output_dir=str(tmp_path / pairs), pairs=pairs, samples_per_problem=2, temperature=1.0, **tiny)
        trainer = SCLTrainer(model=str(ASSET), config=config)
        round_ = trainer.build_round(1)
        prompts = {trainer.prompt(p) for p in trainer.problems(1)}
        assert round_.logs["pairs"] > 0 and all(pair.prompt in prompts for pair in round_.dataset)
        assert all(trainer.verify(next(p for p in trainer.problems(1) if trainer.prompt(p) == pair.prompt), pair.chosen)
                   for pair in round_.dataset)
    metrics = trainer.evaluate()  # SCL is judged by the first answer alone
    assert metrics["accuracy"] == metrics["accuracy_t1"] and "accuracy_t2" in metrics
