"""Critique-in-the-loop: critic data, refinement under critique at test time, and that the refinement
step is what joins the SFT data (and not in the control)."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from selfgen.data.problems import Problem
from selfgen.data.reasoning import Feedback
from selfgen.data.tasks import get_task
from selfgen.train.llm import critique as critique_module
from selfgen.train.llm.critique import (
    CritiqueConfig,
    CritiqueTrainer,
    critic_examples,
    critique_refine,
    majority_vote,
    refinement_examples,
)
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.prompts import PromptFormat
from selfgen.train.llm.revision import Episode, Turn
from selfgen.train.llm.rollout import Rollout

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
needs_asset = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
PROBLEM = Problem(question="47+85", answer="132", id="p")
RIGHT = "S:7+5+0=12,4+8+1=13\nA:132"
WRONG_STEP_2 = "S:7+5+0=12,4+8+1=14\nA:142"
WRONG_STEP_1 = "S:7+5+0=11,4+8+1=13\nA:131"


def test_critic_examples_name_the_first_wrong_step():
    task, fmt = get_task("add", max_digits=2), PromptFormat()
    examples = critic_examples(task, fmt, [PROBLEM] * 3, [WRONG_STEP_2, RIGHT, WRONG_STEP_1])
    assert [e.completion for e in examples] == ["N2", "Y", "N1"]
    assert examples[0].prompt == "Q:47+85\n" + WRONG_STEP_2 + "\nF:"


def test_refinement_examples_pair_each_wrong_attempt_with_a_right_sample():
    fmt = PromptFormat()
    feedback = [Feedback(False, 2), Feedback(True), Feedback(False, 1)]
    examples = refinement_examples(fmt, PROBLEM, [WRONG_STEP_2, RIGHT, WRONG_STEP_1], [False, True, False], feedback)
    assert [(e.prompt, e.completion) for e in examples] == [
        ("Q:47+85\n" + WRONG_STEP_2 + "\nF:N2\nR:\n", RIGHT),
        ("Q:47+85\n" + WRONG_STEP_1 + "\nF:N1\nR:\n", RIGHT),
    ]
    assert refinement_examples(fmt, PROBLEM, [WRONG_STEP_2], [False], feedback[:1]) == []


def test_majority_vote_reads_canonical_answers():
    fmt = PromptFormat()
    assert majority_vote(["A:0132", "A:7", "S:x\nA:132"], fmt) == majority_vote(["A:132"], fmt)
    assert majority_vote(["no answer"], fmt) is None


@needs_asset
def test_critique_refine_refines_exactly_what_the_critic_calls_wrong(monkeypatch):
    model, tokenizer = load_policy(ASSET)
    verdicts = [Feedback(True), Feedback(False, 2), None, Feedback(False)]
    calls = []
    real_sampler = critique_module.sample_revisions

    def recording_sampler(*args, **kwargs):
        episodes = real_sampler(*args, **kwargs)
        calls.append((kwargs, episodes))
        return episodes

    monkeypatch.setattr(critique_module, "critic_feedback", lambda *a: lambda problems, attempts: verdicts[: len(attempts)])
    monkeypatch.setattr(critique_module, "sample_revisions", recording_sampler)
    problems = [PROBLEM, Problem(question="3+4", answer="7", id="q")]
    result = critique_refine(model, model, tokenizer, problems, num_samples=2, max_new_tokens=24)
    attempts = [e.texts[0] for e in calls[0][1]]
    assert result.attempts == [attempts[:2], attempts[2:]]
    (refine_kwargs, refined) = calls[1]
    assert refine_kwargs["first_attempts"] == [attempts[1], attempts[3]]  # only the ones called wrong
    assert [e.turns[0].feedback for e in refined] == [Feedback(False, 2), Feedback(False)]
    assert refined[0].turns[1].rollout.prompt == "Q:47+85\n" + attempts[1] + "\nF:N2\nR:\n"
    assert result.finals == [[attempts[0], refined[0].texts[1]], [attempts[2], refined[1].texts[1]]]
    assert result.refined == [[False, True], [False, True]]


def _round_examples(tmp_path, monkeypatch, use_critic: bool):
    """One build_round on 2 problems whose samples are all wrong; a refinement returns the worked solution."""
    config = CritiqueConfig(
        output_dir=str(tmp_path / str(use_critic)), problems_per_iteration=2, samples_per_problem=2, eval_problems=2,
        use_critic=use_critic, task="add", max_digits=2,
    )
    trainer = CritiqueTrainer(model=str(ASSET), config=config)
    trainer.critic = trainer.policy
    problems = trainer.problems(1)
    worked = {p.question: trainer.task.worked_solution(p) for p in problems}
    wrong = {p.question: "S:1+1+0=3\nA:3" for p in problems}
    monkeypatch.setattr(trainer, "solve", lambda ps, **kw: [SimpleNamespace(text=wrong[p.question]) for p in ps for _ in range(2)])
    monkeypatch.setattr(critique_module, "critic_feedback", lambda *a: lambda problems, attempts: [Feedback(False, 1)] * len(attempts))

    def revisions(problems, rounds, feedback, first_attempts, **kwargs):  # the actor's refinement: the worked solution
        notes = feedback(problems, first_attempts)
        turn = lambda text, ok, note=None: Turn(Rollout(0, "", text, [], [], []), None, ok, note)  # noqa: E731
        return [Episode(0, p, [turn(a, False, n), turn(worked[p.question], True)]) for p, a, n in zip(problems, first_attempts, notes)]

    monkeypatch.setattr(trainer, "revisions", revisions)
    round_ = trainer.build_round(1)
    return trainer, problems, worked, wrong, round_


@needs_asset
def test_refinements_under_critique_are_what_gets_trained(tmp_path, monkeypatch):
    trainer, problems, worked, wrong, round_ = _round_examples(tmp_path, monkeypatch, use_critic=True)
    pairs = {(e.prompt, e.completion) for e in round_.dataset}
    for p in problems:
        assert (trainer.prompt(p), worked[p.question]) in pairs  # the refinement, stored with the plain prompt
        assert (trainer.format.revision(p.question, wrong[p.question], Feedback(False, 1)), worked[p.question]) in pairs
    assert not any(e.completion == wrong[p.question] for e in round_.dataset for p in problems)
    assert round_.logs["problems_solved"] == 1.0 and round_.logs["e_step_accuracy"] == 0.0
    assert round_.logs["actor_generations"] == 4.0 and round_.from_base

    _, _, _, _, control = _round_examples(tmp_path, monkeypatch, use_critic=False)
    assert control.dataset == [] and control.logs["problems_solved"] == 0.0 and control.logs["actor_generations"] == 2.0


@needs_asset
@pytest.mark.slow
def test_one_tiny_run_trains_a_critic_and_an_iteration(tmp_path):
    config = CritiqueConfig(
        output_dir=str(tmp_path / "run"), task="add", max_digits=2, iterations=1, problems_per_iteration=4, eval_problems=4, samples_per_problem=2,
        max_train_steps=2, train_batch_size=4, seed_problems=4, seed_samples=2, critic_train_steps=2, seed_train_steps=2,
        eval_samples=2, max_new_tokens=32, logging_steps=1,
    )
    report = CritiqueTrainer(model=str(ASSET), config=config).train()
    assert [r["iteration"] for r in report.history] == [0, 1]
    assert {"accuracy_refined", "majority_at_n", "critique_refine_at_n", "critic_examples"} <= set(report[0])
    assert (tmp_path / "run" / "critic" / "model" / "config.json").is_file()
    resumed = CritiqueTrainer(model=str(ASSET), config=config)
    resumed.config.resume_from = "latest"
    history, done = resumed._resume()
    assert done == 1 and resumed.critic is not None and len(resumed.seed_examples) == report[0]["seed_examples"]
