"""SPC: the game's outcome on hand-made cases, detection metrics, one tiny iteration, config errors."""

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from selfgen.data.reasoning import LabelledSolution, implied_verdict, parse_derivation, reference_steps, step_result
from selfgen.data.problems import Problem
from selfgen.data.tasks import get_task, parse_verdict
from selfgen.train.llm.modeling import frozen_copy
from selfgen.train.llm.objectives import GRPOCollator, GRPOObjective, PolicySample
from selfgen.train.llm.rollout import Rollout
from selfgen.train.llm.spc import (
    SPCConfig,
    SPCObjective,
    Game,
    SPCTrainer,
    SneakyStep,
    balanced_by_kind,
    critic_rewards,
    derivation_accuracy,
    detection_metrics,
    error_kind,
    first_flagged,
    sneaky_is_effective,
    step_labels,
    sneaky_reward,
    verdict_consistency,
)

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"


def test_game_outcome():
    # a real error found by one critique and missed by the other (one says Y, one has no verdict)
    rewards = critic_rewards([False, True, None], step_is_wrong=True)
    assert rewards == [1.0, -1.0, -1.0]
    assert sneaky_reward(True, rewards) == pytest.approx(1 / 3)  # fooled two of three
    assert sneaky_reward(True, [1.0, 1.0]) == -1.0  # always caught
    assert sneaky_reward(False, []) == -1.0  # its step was not actually wrong
    # on the original correct step the critic must say Y
    assert critic_rewards([True, False], step_is_wrong=False) == [1.0, -1.0]


def test_sneaky_validation():
    assert sneaky_is_effective(1.0, 0.0, changed=True, min_original_success=0.5)
    assert not sneaky_is_effective(1.0, 0.25, changed=True, min_original_success=0.5)  # still solvable
    assert not sneaky_is_effective(0.25, 0.0, changed=True, min_original_success=0.5)  # context already fails
    assert not sneaky_is_effective(1.0, 0.0, changed=False, min_original_success=0.5)  # copied the step


def test_detection_metrics_and_first_flag():
    assert first_flagged([True, True]) == -1 and first_flagged([True, None, False]) == 1
    problem = Problem("1+2", "3", "p")
    solutions = [LabelledSolution(problem, ["a", "b"], 1), LabelledSolution(problem, ["a", "b"], -1),
                 LabelledSolution(problem, ["a", "b"], 0), LabelledSolution(problem, ["a", "b"], -1)]
    metrics = detection_metrics(solutions, [1, -1, 1, 0])  # TP (right place), TN, TP (wrong place), FP
    assert metrics["critic_f1"] == pytest.approx(2 * (2 / 3) * 1.0 / (2 / 3 + 1.0))
    assert metrics["critic_accuracy"] == 0.75 and metrics["critic_location_accuracy"] == 0.5
    # ProcessBench F1: errors located 1/2, clean accepted 1/2 -> harmonic mean 0.5
    assert metrics["critic_processbench_f1"] == pytest.approx(0.5)
    # flagging everything: detection F1 = 2/3 with half the solutions wrong, ProcessBench F1 = 0
    always = detection_metrics(solutions, [0, 0, 0, 0])
    assert always["critic_f1"] == pytest.approx(2 / 3) and always["critic_processbench_f1"] == 0.0


def test_step_labels_stop_at_the_error():
    problem = Problem("1+2", "3", "p")
    solutions = [LabelledSolution(problem, ["a", "b", "c"], 1), LabelledSolution(problem, ["a", "b"], -1)]
    verdicts = [[True, False, False], [None, True]]  # the step after the error is not scored
    truth, flagged = step_labels(solutions, verdicts)
    assert truth == [False, True, False, False] and flagged == [False, True, True, False]


def test_derivation_accuracy_scores_the_re_derived_step():
    task = get_task("arith", min_digits=2, max_digits=2)
    problem = Problem("47+85", "132", "p")
    clean = LabelledSolution(problem, ["7+5+0=12", "4+8+1=13"], -1)
    wrong = LabelledSolution(problem, ["7+5+0=12", "4+8+0=12"], 1, "carry")
    critiques = [
        ["D:7+5+0=12\nV:Y", "D:4+8+1=14\nV:N"],  # second derivation wrong
        ["D:7+5+0=12\nV:Y", "D:4+8+0=12\nV:Y"],  # copied the judged (wrong) step: not the reference
    ]
    assert derivation_accuracy(task, [clean, wrong], critiques) == pytest.approx(2 / 4)
    assert derivation_accuracy(task, [clean], [["V:Y", "V:Y"]]) == 0.0  # a verdict-only critic derives nothing


def test_verdict_consistency_against_the_critics_own_derivation():
    problem = Problem("47+85", "132", "p")
    clean = LabelledSolution(problem, ["7+5+0=12", "4+8+1=13"], -1)
    wrong = LabelledSolution(problem, ["7+5+0=12", "4+8+1=14", "0+0+1=1"], 1, "calculation")
    critiques = [
        ["D:7+5+0=12 vs 12\nV:Y", "D:4+8+1=13 vs 13\nV:N"],  # the second verdict contradicts its comparison
        ["D:7+5+0=12 vs 12\nV:Y", "D:4+8+1=13 vs 14\nV:N", "D:0+0+1=1 vs 1\nV:N"],  # the step after the error is not scored
    ]
    assert verdict_consistency([clean, wrong], critiques) == pytest.approx(3 / 4)
    # a wrong derivation with the verdict it implies is consistent (and wrong); no derivation is never consistent
    assert verdict_consistency([clean], [["D:7+5+0=13 vs 12\nV:N", "V:Y"]]) == pytest.approx(1 / 2)


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
@pytest.mark.parametrize("critique_format, weight", [("compare", 10.0), ("rederive", 5.0), ("verdict", 1.0)])
def test_warmup_critiques_re_derive_from_the_solver(tmp_path, critique_format, weight):
    config = SPCConfig(
        output_dir=str(tmp_path), warmup_examples=60, eval_problems=1, detection_problems=1, max_digits=3,
        critique_format=critique_format, warmup_verdict_weight=weight,
    )
    trainer = SPCTrainer(model=str(ASSET), task="arith", config=config)
    critic = [pair for pair in trainer.seed_round().dataset if "\nC:" in pair.prompt]
    verdicts = [parse_verdict(pair.completion) for pair in critic]
    assert len(critic) > 20 and True in verdicts and False in verdicts  # both verdicts are taught
    for pair in critic:
        context, judged = pair.prompt.rstrip("\n").split("\nC:")
        question = context.split("\n")[0].removeprefix("Q:")
        prefix = [step for step in context.split("S:", 1)[1].split(",") if step]
        reference = reference_steps(trainer.task, Problem(question, "", "p"))[len(prefix)]
        assert parse_verdict(pair.completion) is (judged == reference)
        n = len(pair.completion)  # only the verdict character is up-weighted, and only when asked
        assert pair.weighted_spans == (((n - 1, n, weight),) if weight != 1.0 else ())
        if critique_format == "compare":  # the solver's step, the judged result, the verdict that comparison implies
            assert pair.completion == f"D:{reference} vs {step_result(judged)}\nV:{'Y' if judged == reference else 'N'}"
            assert parse_verdict(pair.completion) is implied_verdict(pair.completion, judged)
        elif critique_format == "rederive":  # the solver's step at that position, never a copy of a wrong judged step
            assert pair.completion == f"D:{reference}\nV:{'Y' if judged == reference else 'N'}"
        else:
            assert parse_derivation(pair.completion) is None


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_update_adds_the_sft_term_on_replayed_warmup_rows(tmp_path):
    """SPAG's offline-RL loss (SPC's rl_critic.sh): the policy loss over the game rows only + c x the mean
    per-sequence NLL of the warm-up rows, which carry no advantage and no KL."""
    config = SPCConfig(output_dir=str(tmp_path), warmup_examples=30, eval_problems=1, detection_problems=1, max_digits=3)
    trainer = SPCTrainer(model=str(ASSET), task="arith", config=config)
    replay = trainer.replayed_warmup(3, iteration=1)
    assert len(replay) == 3 and all(r.extras == {"sft": 1.0} and r.kl_weight == 0.0 and r.advantage == 0.0 for r in replay)
    assert [r.completion_ids for r in replay] != [r.completion_ids for r in trainer.replayed_warmup(3, iteration=2)]
    tokens = trainer.tokenizer
    game = [
        PolicySample(tokens("Q:12+34\nS:")["input_ids"], tokens("2+4+0=6")["input_ids"], 1.0, [-1.0] * 7, extras={"sft": 0.0}),
        PolicySample(tokens("Q:12+34\nS:")["input_ids"], tokens("2+4+0=7")["input_ids"], -1.0, [-2.0] * 7, extras={"sft": 0.0}),
    ]
    collate = GRPOCollator(tokens.pad_token_id)
    reference = frozen_copy(trainer.policy)
    objective = SPCObjective(reference, beta=0.04, sft_coefficient=0.15)
    model = trainer.policy.eval()
    mixed, _ = objective.compute_loss(model, collate(game + replay))
    game_only, _ = GRPOObjective(reference, beta=0.04).compute_loss(model, collate(game))
    sft_batch = collate(replay)
    logprobs, mask = objective.completion_logprobs(model, sft_batch), sft_batch["completion_mask"].float()
    nll = (-(logprobs * mask).sum(-1) / mask.sum(-1)).mean()
    torch.testing.assert_close(mixed, game_only + 0.15 * nll, rtol=1e-5, atol=1e-6)
    without, _ = SPCObjective(reference, beta=0.04, sft_coefficient=0.0).compute_loss(model, collate(game + replay))
    torch.testing.assert_close(without, game_only, rtol=1e-5, atol=1e-6)


def tiny_config(tmp_path, **overrides) -> SPCConfig:
    """A few seconds' game on 2-digit additions (the warm-up and update are a couple of steps)."""
    settings = dict(
        output_dir=str(tmp_path / "run"), iterations=1, problems_per_iteration=4, eval_problems=3, detection_problems=4,
        samples_per_problem=2, validation_samples=2, critic_samples=2, warmup_examples=12, warmup_train_steps=2,
        max_train_steps=2, train_batch_size=4, max_new_tokens=40, max_digits=2, logging_steps=1,
    )
    return SPCConfig(**{**settings, **overrides})


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_one_iteration_end_to_end(tmp_path):
    config = tiny_config(tmp_path)
    report = SPCTrainer(model=str(ASSET), task="arith", config=config).train()
    assert [record["iteration"] for record in report.history] == [0, 1]
    assert report[0]["seed_train_steps"] == 2 and "base_critic_f1" in report[0]
    for key in ("accuracy", "critic_f1", "critic_step_f1", "critic_derivation_accuracy", "critic_verdict_consistency", "critic_processbench_f1", "critic_accuracy",
                "critic_location_accuracy", "accept_rate", "sneaky_success_rate"):
        assert 0.0 <= report[1][key] <= 1.0
    assert report[1]["time_rollout_s"] > 0


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_critic_judges_every_rounds_sneaky_steps(tmp_path):
    """sneaky_history='all': round 2's critic judges round 1's recorded sneaky steps besides its own."""
    config = tiny_config(
        tmp_path, iterations=2, problems_per_iteration=6, eval_problems=2, detection_problems=2, max_train_steps=1,
        min_original_success=0.0, sneaky_history="all", critic_kind_balance=True,
    )
    report = SPCTrainer(model=str(ASSET), task="arith", config=config).train()
    recorded = [
        (tmp_path / "run" / f"iteration-{k}" / "sneaky_steps.jsonl").read_text().splitlines() for k in (1, 2)
    ]
    assert [len(lines) for lines in recorded] == [round(report[k]["sneaky_success_rate"] * 6) for k in (1, 2)]
    assert recorded[0], "no sneaky step in round 1: the history is not exercised"
    for k, pool in ((1, len(recorded[0])), (2, len(recorded[0]) + len(recorded[1]))):
        kinds = sum(report[k].get(f"critic_win_rate_{kind}") is not None for kind in ("calculation", "carry", "operand", "other"))
        assert report[k]["critic_judged_steps"] == (-(-pool // kinds) * kinds if pool else 0)  # balanced, all rounds


def test_config_and_task_errors():
    with pytest.raises(ValueError, match="warmup_error_kinds"):
        SPCConfig(warmup_error_kinds=["typo"])
    with pytest.raises(ValueError, match="warmup_critic_fraction"):
        SPCConfig(warmup_critic_fraction=-0.1)
    with pytest.raises(ValueError, match="min_original_success"):
        SPCConfig(min_original_success=2.0)
    with pytest.raises(ValueError, match="critique_format"):
        SPCConfig(critique_format="essay")
    with pytest.raises(ValueError, match="warmup_verdict_weight"):
        SPCConfig(warmup_verdict_weight=0.0)
    with pytest.raises(ValueError, match="rl_sft_coefficient"):
        SPCConfig(rl_sft_coefficient=-0.1)
    with pytest.raises(ValueError, match="verdict_source"):
        SPCConfig(verdict_source="vibes")
    with pytest.raises(ValueError, match="critique_format='compare'"):
        SPCConfig(verdict_source="comparison", critique_format="rederive")
    with pytest.raises(ValueError, match="temperature"):
        SPCConfig(temperature=0.0)
    with pytest.raises(ValueError, match="sneaky_error_types"):
        SPCConfig(sneaky_error_types=["typo"])
    with pytest.raises(ValueError, match="sneaky_history"):
        SPCConfig(sneaky_history="last")
    if (ASSET / "config.json").is_file():
        with pytest.raises(ValueError, match="arithmetic task"):
            SPCTrainer(model=str(ASSET), task="countdown", config=SPCConfig(eval_problems=2))


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_verdict_source_reads_the_written_comparison(tmp_path):
    def trainer(source):
        config = SPCConfig(output_dir=str(tmp_path), eval_problems=1, detection_problems=1, max_digits=2, verdict_source=source)
        return SPCTrainer(model=str(ASSET), task="arith", config=config)

    written, comparison = trainer("written"), trainer("comparison")
    critiques = ["D:4+8+1=13 vs 14\nV:Y", "D:4+8+1=13 vs 13\nV:N", "D:4+8+1=13 vs 13", "D:4+8+1=13\nV:Y"]
    assert [written.verdict(c) for c in critiques] == [True, False, None, True]
    assert [comparison.verdict(c) for c in critiques] == [False, True, True, None]


def test_bundled_config_loads():
    from selfgen.train.config import load_config
    from selfgen.train.llm import spc

    config = load_config(spc.METHOD.config_class, ASSET.parents[1] / "configs" / "spc_arith.yaml")
    assert spc.METHOD.name == "spc" and config.seed == 0 and config.warmup_error_kinds == ["calculation"]
    assert config.critique_format == "verdict" and config.rl_sft_coefficient == 0.0  # the documented 0.86 M runs
    llama = load_config(spc.METHOD.config_class, ASSET.parents[1] / "configs" / "spc_arith_llama.yaml")
    assert llama.model == "assets/lm-arith-llama" and llama.mixed_precision == "no"
    assert llama.verdict_source == "comparison" and llama.rl_sft_coefficient == pytest.approx(0.15)
    assert llama.critique_format == "compare" and llama.critic_max_new_tokens >= len("D:9+9+1=19 vs 18\nV:N") + 1  # + eos
    assert llama.sneaky_history == "current" and not llama.critic_kind_balance
    history = load_config(spc.METHOD.config_class, ASSET.parents[1] / "configs" / "spc_arith_llama_typed.yaml")
    assert history.sneaky_history == "all" and history.critic_kind_balance and history.output_dir != llama.output_dir
    assert history.sneaky_error_types == ["calculation", "carry", "operand"] and llama.sneaky_error_types == []
    assert history.require_step_form and not llama.require_step_form
    assert history.step_max_new_tokens >= len("calculation:9+9+1=17\n") and history.warmup_error_kinds == ["calculation"]
    matched = ("seed", "warmup_examples", "warmup_error_kinds", "warmup_train_steps", "problems_per_iteration", "critic_samples", "max_train_steps",
               "train_batch_size", "learning_rate", "rl_sft_coefficient", "verdict_source")
    assert [getattr(history, key) for key in matched] == [getattr(llama, key) for key in matched]  # its matched control


def test_error_kind_of_a_sneaky_step():
    assert error_kind("4+8+1=13", "4+8+1=14") == "calculation"  # only the result
    assert error_kind("4+8+1=13", "4+8+0=12") == "carry"  # a true equation with the wrong carry
    assert error_kind("4+8+1=13", "4+7+1=12") == "operand"
    assert error_kind("4+8+1=13", "4+8=12") == "carry"  # the carry dropped
    assert error_kind("4+8+1=13", "thirteen") == "other"


def test_balanced_by_kind_gives_each_kind_an_equal_share():
    problem = Problem("47+85", "132", "p")
    calculation = [SneakyStep(problem, [], "4+8+1=13", f"4+8+1={r}") for r in (10, 11, 12, 14, 15, 16)]
    carry = [SneakyStep(problem, [], "4+8+1=13", "4+8+0=12")]
    operand = [SneakyStep(problem, [], "4+8+1=13", "4+7+1=12"), SneakyStep(problem, [], "4+8+1=13", "3+8+1=12")]
    picked = balanced_by_kind(calculation + carry + operand, random.Random(0))
    counts = {kind: sum(s.kind == kind for s in picked) for kind in ("calculation", "carry", "operand")}
    assert counts == {"calculation": 3, "carry": 3, "operand": 3}  # ceil(9 / 3) each
    assert picked.count(carry[0]) == 3 and all(s in picked for s in operand)  # a rare kind is repeated, never lost
    assert len({id(s) for s in picked if s.kind == "calculation"}) == 3  # a common kind is thinned without repeats
    assert balanced_by_kind([], random.Random(0)) == []


def test_sneaky_steps_round_trip_and_history(tmp_path):
    problem = Problem("47+85", "132", "p", {"digits": 2})
    step = SneakyStep(problem, ["7+5+0=12"], "4+8+1=13", "4+8+0=12")
    assert SneakyStep.from_json(step.to_json()) == step
    trainer = SPCTrainer.__new__(SPCTrainer)  # only the history's file handling: no model needed
    trainer.output_dir, trainer.config = tmp_path, SPCConfig(sneaky_history="all", critic_kind_balance=False)
    trainer.save_sneaky_steps(1, [step])
    trainer.save_sneaky_steps(2, [step, step])
    assert trainer.earlier_sneaky_steps(3) == [step, step, step] and trainer.earlier_sneaky_steps(1) == []
    current = [SneakyStep(problem, [], "7+5+0=12", "7+5+0=13")]
    assert trainer.critic_steps(current, 3) == current + [step] * 3  # this round's first, then every earlier one
    trainer.config = SPCConfig(sneaky_history="current")
    assert trainer.critic_steps(current, 3) == current
    trainer.config = SPCConfig(sneaky_history="all")
    with pytest.raises(FileNotFoundError, match="iteration 3"):
        trainer.earlier_sneaky_steps(4)


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_sneaky_move_names_its_error_type_first(tmp_path):
    """sneaky_error_types: the warm-up's sneaky examples name a kind, then write an error of that kind; the game
    plays the step after the name. The critic's examples keep warmup_error_kinds (calculation only)."""
    config = SPCConfig(
        output_dir=str(tmp_path), warmup_examples=90, eval_problems=1, detection_problems=1, max_digits=3,
        sneaky_error_types=["calculation", "carry", "operand"],
    )
    trainer = SPCTrainer(model=str(ASSET), task="arith", config=config)
    pairs = trainer.warmup_pairs()
    sneaky = [pair for pair in pairs if "\nX:" in pair.prompt]
    named = {}
    for pair in sneaky:
        kind, _, wrong = pair.completion.strip().partition(":")
        original = pair.prompt.rstrip("\n").split("\nX:")[1]
        assert trainer.sneaky_step(pair.completion) == wrong != original
        named[kind] = named.get(kind, 0) + (error_kind(original, wrong) == kind)
    assert set(named) == {"calculation", "carry", "operand"} and all(named.values())  # each kind named and written
    for pair in pairs:
        if "\nC:" in pair.prompt:  # the critic still sees calculation errors only
            judged = pair.prompt.rstrip("\n").split("\nC:")[1]
            reference = parse_derivation(pair.completion)
            assert judged == reference or error_kind(reference, judged) == "calculation"
    assert trainer.sneaky_step(" carry:4+8+0=12\n") == "4+8+0=12" and trainer.sneaky_step("typo:4+8=12") == "typo:4+8=12"
    untyped = SPCTrainer(model=str(ASSET), task="arith", config=replace(config, sneaky_error_types=[]))
    assert untyped.sneaky_step("carry:4+8+0=12") == "carry:4+8+0=12"
    assert all(":" not in p.completion for p in untyped.warmup_pairs() if "\nX:" in p.prompt)  # bare steps, as before


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
@pytest.mark.parametrize("require", [False, True])
def test_a_garbled_sneaky_move_fails_validation_when_the_step_form_is_required(tmp_path, monkeypatch, require):
    """Three moves that all pass the solver's validation: a typed well-formed step, a garbled type name and a
    step-less move. With require_step_form only the first is played (and rewarded by the critic's verdicts)."""
    config = SPCConfig(
        output_dir=str(tmp_path), eval_problems=1, detection_problems=1, max_digits=2, critic_samples=1,
        sneaky_error_types=["calculation", "carry", "operand"], require_step_form=require,
    )
    trainer = SPCTrainer(model=str(ASSET), task="arith", config=config)
    problem = Problem("47+85", "132", "p")
    games = [Game(problem, ["7+5+0=12"], "4+8+1=13") for _ in range(3)]
    moves = ["carry:4+8+0=12", "carruoatiin:4+8+0=12", "caecu"]

    def rollout(text):
        return Rollout(0, "", text, [1], [2], [-1.0])

    monkeypatch.setattr(trainer, "sample_role", lambda prompts, *args, **kwargs: [rollout(m) for m in moves])
    monkeypatch.setattr(trainer, "success_rates", lambda games, steps, seed: [1.0 if s == "4+8+1=13" else 0.0 for s in steps])
    monkeypatch.setattr(trainer, "critique", lambda items, m, seed: [rollout(f"D:4+8+1=13 vs {i[2].split('=')[-1]}\nV:N") for i in items])
    samples, logs = trainer.play(games, iteration=1)
    assert logs["sneaky_well_formed_rate"] == pytest.approx(1 / 3)
    assert [g.effective for g in games] == [True, not require, not require]
    assert logs["sneaky_success_rate"] == pytest.approx(1 / 3 if require else 1.0)
    assert sneaky_reward(games[0].effective, games[0].critic_rewards) == -1.0  # 13 vs 12: the critic found it


def test_benchmark_splits_and_critique_cache(tmp_path, benchmark_module):
    bench = benchmark_module("spc_critic")
    task = get_task("arith", min_digits=3, max_digits=4)
    test, validation = bench.held_out_solutions(task, 30, "test"), bench.held_out_solutions(task, 30, "validation")
    assert {task.split_of(s.problem) for s in test} == {"eval"}
    assert {task.split_of(s.problem) for s in validation} == {"train"}
    assert [s.problem.question for s in bench.held_out_solutions(task, 10, "test")] == [s.problem.question for s in test[:10]]

    class Critic:  # stands in for the trainer: one critique per step, counted
        calls = 0

        def step_critiques(self, problems, solutions):
            Critic.calls += 1
            return [[f"D:{step} vs 0" for step in steps] for steps in solutions]

    path = tmp_path / "cache.json"
    first = bench.cached_critiques(Critic(), test, path)
    again = bench.cached_critiques(Critic(), test, path)
    assert first == again and Critic.calls == 1 and path.is_file()
    with pytest.raises(ValueError, match="do not match"):
        bench.cached_critiques(Critic(), test[:5], path)
    assert bench.cached_critiques(Critic(), test[:5], None) == first[:5] and Critic.calls == 2
