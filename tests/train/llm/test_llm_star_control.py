"""STaR's and ReST-EM's matched controls: SFT on as many reference worked solutions, for the same steps."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from selfgen.train.llm import ReSTEMConfig, ReSTEMTrainer, STaRConfig, STaRTrainer

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
pytestmark = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")


def round_of(tmp_path, control: bool):
    config = STaRConfig(
        output_dir=str(tmp_path / str(control)), problems_per_iteration=8, eval_problems=2, max_digits=3,
        rationalize=False, max_train_steps=5, step_growth=0.2, ground_truth_control=control,
    )
    trainer = STaRTrainer(model=str(ASSET), config=config)
    problems = trainer.problems(2)
    # the policy gets problems 1, 4 and 6 right (their reference solution), the rest wrong
    texts = [trainer.task.worked_solution(p) if i in (1, 4, 6) else "S:\nA:0" for i, p in enumerate(problems)]
    trainer.solve = lambda batch, **kwargs: [SimpleNamespace(text=text) for text in texts]
    return problems, trainer.task, trainer.build_round(2)


def test_control_trains_on_as_many_reference_solutions_for_the_same_steps(tmp_path):
    problems, task, star = round_of(tmp_path, control=False)
    _, _, control = round_of(tmp_path, control=True)
    assert [e.prompt for e in star.dataset] == [f"Q:{problems[i].question}\n" for i in (1, 4, 6)]
    assert [(e.prompt, e.completion) for e in control.dataset] == [
        (f"Q:{p.question}\n", task.worked_solution(p)) for p in problems[:3]
    ]
    assert control.max_train_steps == star.max_train_steps == 6 and control.from_base and star.from_base
    assert control.logs == star.logs


def test_star_with_several_samples_keeps_each_problems_distinct_correct_samples(tmp_path):
    config = STaRConfig(
        output_dir=str(tmp_path), problems_per_iteration=3, eval_problems=2, max_digits=3, rationalize=False,
        samples_per_problem=3,
    )
    trainer = STaRTrainer(model=str(ASSET), config=config)
    problems = trainer.problems(1)
    right = [trainer.task.worked_solution(p) for p in problems]
    # problem 0: right twice (one distinct), problem 1: all wrong, problem 2: right once, after a wrong one
    texts = [right[0], right[0], "S:\nA:0", "S:\nA:0", "S:\nA:0", "S:\nA:0", "S:\nA:0", right[2], right[1]]
    trainer.solve = lambda batch, **kwargs: [SimpleNamespace(text=text) for text in texts]
    round_ = trainer.build_round(1)
    assert [(e.prompt, e.completion) for e in round_.dataset] == [
        (f"Q:{problems[0].question}\n", right[0]), (f"Q:{problems[2].question}\n", right[2])
    ]
    assert round_.logs["train_accuracy"] == pytest.approx(2 / 3)


def rest_em_round(tmp_path, control: bool):
    config = ReSTEMConfig(output_dir=str(tmp_path / f"em-{control}"), problems_per_iteration=4, eval_problems=2,
                          max_digits=3, samples_per_problem=2, max_train_steps=5, ground_truth_control=control)
    trainer = ReSTEMTrainer(model=str(ASSET), config=config)
    problems = trainer.problems(1)
    # problem 2's two samples are right (one distinct solution), problem 3 has one right sample, the rest wrong
    right = {4, 5, 7}
    texts = [trainer.task.worked_solution(problems[i // 2]) if i in right else "S:\nA:0" for i in range(8)]
    trainer.solve = lambda batch, **kwargs: [SimpleNamespace(text=text) for text in texts]
    return problems, trainer.task, trainer.build_round(1)


def test_rest_em_control_trains_on_as_many_reference_solutions_for_the_same_steps(tmp_path):
    problems, task, em = rest_em_round(tmp_path, control=False)
    _, _, control = rest_em_round(tmp_path, control=True)
    assert [e.prompt for e in em.dataset] == [f"Q:{problems[i].question}\n" for i in (2, 3)]  # duplicates kept once
    assert [(e.prompt, e.completion) for e in control.dataset] == [
        (f"Q:{p.question}\n", task.worked_solution(p)) for p in problems[:2]
    ]
    assert control.from_base and em.from_base and control.logs == em.logs
    assert control.max_train_steps == em.max_train_steps
