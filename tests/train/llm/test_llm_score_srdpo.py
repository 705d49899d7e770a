"""SCoRe's REINFORCE stages and reward shaping; self-rewarding DPO's seed EFT/IFT stage."""

from pathlib import Path

import pytest
import torch

from selfgen.data.problems import Problem
from selfgen.data.tasks import JUDGE_MARK, extract_answer, get_task, parse_verdict, revision_prompt
from selfgen.train.llm.objectives import GRPOCollator, GRPOObjective, PolicySample
from selfgen.train.llm.rollout import Rollout
from selfgen.train.llm.score import (
    SCoReConfig,
    SCoReTrainer,
    baseline_advantages,
    likelihood_keep_pairs,
    mean_logprob,
    revision_pairs,
    shaped_reward,
    turn_returns,
)
from selfgen.train.llm.self_reward_dpo import (
    SelfRewardDPOConfig,
    SelfRewardDPOTrainer,
    balanced_candidates,
    corrupted_candidates,
    scrambled_answer,
    seed_examples,
)

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
needs_asset = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")

TINY = dict(
    iterations=1, problems_per_iteration=3, eval_problems=4, samples_per_problem=2, max_train_steps=2,
    train_batch_size=4, max_new_tokens=32, max_digits=2, logging_steps=1,
)


def test_stage2_shaped_reward_is_r2_plus_alpha_times_improvement():
    r1 = torch.tensor([0.0, 0.0, 1.0, 1.0])
    r2 = torch.tensor([0.0, 1.0, 0.0, 1.0])
    alpha = 10.0
    torch.testing.assert_close(shaped_reward(r1, r2, alpha), r2 + alpha * (r2 - r1))
    assert shaped_reward(r1, r2, alpha).tolist() == [0.0, 11.0, -10.0, 1.0]  # i->c bonus, c->i penalty


# one group of the four hand-made outcomes: right->right, wrong->right, right->wrong, wrong->wrong
R1 = torch.tensor([1.0, 0.0, 1.0, 0.0])
R2 = torch.tensor([1.0, 1.0, 0.0, 0.0])


def test_stage1_credits_both_turns_with_the_second_turns_reward():
    first, second = turn_returns(R1, R2, stage=1, alpha=10.0)
    assert first.tolist() == [1.0, 1.0, 0.0, 0.0] and second.tolist() == [1.0, 1.0, 0.0, 0.0]
    a1, a2 = baseline_advantages(first, 4), baseline_advantages(second, 4)
    assert a1.tolist() == [0.5, 0.5, -0.5, -0.5]  # turn 1 is not zero: it is sampled from the policy (eq. 3)
    torch.testing.assert_close(a1, a2)


def test_stage2_never_rewards_a_wrong_first_attempt():
    first, second = turn_returns(R1, R2, stage=2, alpha=10.0)
    assert first.tolist() == [2.0, 1.0, 1.0, 0.0]  # r1 + r2: no shaping bonus on turn 1
    assert second.tolist() == [1.0, 11.0, -10.0, 0.0]  # r2 + alpha (r2 - r1)
    a1, a2 = baseline_advantages(first, 4), baseline_advantages(second, 4)
    assert a1.tolist() == [1.0, 0.0, 0.0, -1.0] and a2.tolist() == [0.5, 10.5, -10.5, -0.5]
    # a wrong first attempt never gets more turn-1 credit than a right one with the same second turn
    assert a1[1] < a1[0] and a1[3] < a1[2]
    with pytest.raises(ValueError, match="stage"):
        turn_returns(R1, R2, stage=3, alpha=10.0)


def test_reinforce_baseline_is_the_group_mean_without_scaling():
    returns = torch.tensor([1.0, 0.0, 0.0, 0.0, 3.0, 3.0])
    assert baseline_advantages(returns, 2).tolist() == [0.5, -0.5, 0.0, 0.0, 0.0, 0.0]
    assert baseline_advantages(returns, 3).tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, -2.0, 1.0, 1.0])


def test_score_objective_gradient_is_reinforce():
    """Ratio 1 (no old logprobs), dr_grpo reduction: grad = -sum_i A_i grad log pi(y_i) / (B * L)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11))

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **_):
            return type("Out", (), {"logits": self.net(input_ids)[:, -logits_to_keep:]})()

    policy = Wrapped()
    samples = [PolicySample([1, 2], [3, 4, 5], 0.7), PolicySample([2], [6, 7], -0.3)]
    batch = GRPOCollator(pad_token_id=0)(samples)
    objective = GRPOObjective(None, beta=0.0, loss_type="dr_grpo", max_completion_length=8)
    loss, _ = objective.compute_loss(policy, batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    logprobs = objective.completion_logprobs(policy, batch)
    mask = batch["completion_mask"].float()
    reference = -((logprobs * mask).sum(-1) * batch["advantages"]).sum() / (2 * 8)
    expected = torch.autograd.grad(reference, list(model.parameters()))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


@needs_asset
@pytest.mark.parametrize("stage", [1, 2])
def test_score_round_credits_turns_as_the_paper(tmp_path, stage):
    config = SCoReConfig(output_dir=str(tmp_path), stage1_iterations=1, beta1=0.05, beta2=1.0, alpha=10.0, **TINY)
    trainer = SCoReTrainer(model=str(ASSET), task="arith", config=config)
    round_ = trainer.build_round(stage)
    k, n = config.samples_per_problem, config.problems_per_iteration * config.samples_per_problem
    first, second = round_.dataset[:n], round_.dataset[n:]
    assert round_.objective.loss_type == "dr_grpo" and round_.objective.beta == 0.05
    assert all(s.old_logprobs is None for s in round_.dataset)  # on-policy REINFORCE: ratio 1
    problems = [p for p in trainer.problems(stage) for _ in range(k)]
    tokenizer = trainer.tokenizer
    r1 = torch.tensor([float(trainer.task.verify(p, tokenizer.decode(s.completion_ids))) for p, s in zip(problems, first)])
    r2 = torch.tensor([float(trainer.task.verify(p, tokenizer.decode(s.completion_ids))) for p, s in zip(problems, second)])
    a1, a2 = torch.tensor([s.advantage for s in first]), torch.tensor([s.advantage for s in second])
    if stage == 1:
        assert round_.logs["stage"] == 1.0
        assert all(s.kl_weight == pytest.approx(1.0 / 0.05) for s in first)  # turn 1: beta2 / beta1
        torch.testing.assert_close(a1, baseline_advantages(r2, k))
        torch.testing.assert_close(a2, baseline_advantages(r2, k))
    else:
        assert round_.logs["stage"] == 2.0 and all(s.kl_weight == 1.0 for s in first)
        shaped = r2 + 10.0 * (r2 - r1)
        torch.testing.assert_close(a1, baseline_advantages(r1 + r2, k))
        torch.testing.assert_close(a2, baseline_advantages(shaped, k))
        trainer.config.stage2_beta_first = 1.0  # the other departure: stage I's strong first-turn KL kept
        held = trainer.build_round(stage).dataset
        assert all(s.kl_weight == pytest.approx(1.0 / 0.05) for s in held[:n])
        assert all(s.kl_weight == 1.0 for s in held[n:])


def test_warm_start_revisions_keep_right_attempts_and_fix_wrong_ones_with_own_samples():
    prompts = ["Q:1+2\n", "Q:4+4\n", "Q:5+5\n"]
    attempts = [["A:3", "A:4", "A:5"], ["A:9", "A:7"], ["A:10", "A:10"]]
    verdicts = [[True, False, False], [False, False], [True, True]]
    contexts = [[revision_prompt(prompt, a) for a in group] for prompt, group in zip(prompts, attempts)]
    pairs = revision_pairs(contexts, attempts, verdicts)
    assert [(p.prompt, p.completion) for p in pairs] == [
        ("Q:1+2\nA:3\nR:\n", "A:3"), ("Q:1+2\nA:4\nR:\n", "A:3"), ("Q:1+2\nA:5\nR:\n", "A:3"),
        ("Q:5+5\nA:10\nR:\n", "A:10"), ("Q:5+5\nA:10\nR:\n", "A:10"),
    ]  # the second problem has no correct sample of its own: no target, no pair


def test_scrambled_eft_candidates_balance_the_marks_and_weight_the_decisions():
    task = get_task("arith", min_digits=3, max_digits=4)
    candidates = corrupted_candidates(task, task.sample(300, 0), seed=0, corrupt=scrambled_answer)
    examples = seed_examples(task, candidates, ift_problems=0, mark_weight=10.0)
    verdicts = [parse_verdict(e.completion) for e in examples]
    assert verdicts.count(True) == verdicts.count(False) == 150
    wrong = [e for e, verdict in zip(examples, verdicts) if not verdict]
    marks = "".join(e.completion.split("\nD:")[1].split("\n")[0][2::4] for e in wrong)
    assert 0.4 < marks.count("x") / len(marks) < 0.65  # scrambled answers differ in about half their digits
    for example in examples:  # the weighted tokens are exactly the =/x marks and the verdict
        weighted = "".join(example.completion[start:end] for start, end, _ in example.weighted_spans)
        line = example.completion.split("\nD:")[1].split("\n")[0]
        assert weighted == line[2::4] + example.completion[-1] and set(weighted[:-1]) <= {"=", "x"}


def test_eft_seed_data_is_labelled_by_the_verifier_with_a_local_comparison():
    task = get_task("arith", min_digits=1, max_digits=3)
    problems = task.sample(40, 0)
    examples = seed_examples(task, corrupted_candidates(task, problems, seed=0), ift_problems=10, seed=0)
    judge = [e for e in examples if e.prompt.endswith(JUDGE_MARK)]
    assert len(judge) == 40 and len(examples) == 50
    verdicts = [parse_verdict(e.completion) for e in judge]
    assert verdicts.count(True) == verdicts.count(False) == 20
    for example, verdict in zip(judge, verdicts):
        question = example.prompt.split("\n")[0][2:]
        left, right = question.split("+")
        problem = Problem(question, str(int(left) + int(right)), "p")
        candidate = example.prompt[len(f"Q:{question}\n") : -len(JUDGE_MARK)]
        assert verdict == task.verify(problem, candidate)
        assert example.completion.startswith(f"C:{extract_answer(candidate)}\n")  # the candidate's answer quoted
        assert extract_answer(example.completion.rsplit("\nV:", 1)[0]) == problem.answer  # re-derived
        marks = example.completion.split("\nD:")[1].split("\n")[0]  # the digit-by-digit comparison
        assert ("x" not in marks) == verdict


def test_policy_candidates_are_balanced_one_of_each_class_per_problem():
    task = get_task("arith", min_digits=1, max_digits=2)
    problems = [Problem("1+2", "3", "a"), Problem("4+4", "8", "b"), Problem("5+5", "10", "c")]
    completions = [["A:3", "A:4", "A:3"], ["A:8", "A:8"], ["A:11", "A:10", "A:12"]]
    candidates = balanced_candidates(task.verify, problems, completions)
    assert [(p.id, c, v) for p, c, v in candidates] == [
        ("a", "A:3", True), ("a", "A:4", False), ("b", "A:8", True), ("c", "A:11", False),
    ]
    with pytest.raises(ValueError, match="eft_candidates"):
        SelfRewardDPOConfig(eft_candidates="human")


@pytest.mark.slow  # samples, judges and trains three times: 6.5 min on the shared 2-core machine
@needs_asset
def test_self_reward_dpo_seed_stage_runs_before_the_iterations(tmp_path):
    config = SelfRewardDPOConfig(
        output_dir=str(tmp_path / "run"), num_judgements=2, judge_max_new_tokens=36, eft_problems=6, ift_problems=2,
        seed_train_steps=2, **{**TINY, "min_digits": 3, "max_digits": 4, "max_new_tokens": 48},  # the model errs
    )
    report = SelfRewardDPOTrainer(model=str(ASSET), task="arith", config=config).train()
    first = report[0]
    assert first["iteration"] == 0 and first["seed_train_steps"] == 2
    assert first["eft_examples"] % 2 == 0 and 0 < first["eft_examples"] <= 12  # own samples, balanced
    for key in ("base_accuracy", "base_judge_agreement", "base_judge_agreement_corrupted", "accuracy",
                "judge_agreement", "judge_accepts_correct", "judge_rejects_wrong", "judge_agreement_corrupted"):
        assert 0.0 <= first[key] <= 1.0
    assert (tmp_path / "run" / "iteration-0" / "model" / "config.json").is_file()
    assert [record["iteration"] for record in report.history] == [0, 1]


@needs_asset
def test_sft_loss_weights_weight_the_spans_tokens_and_default_to_the_plain_mean():
    from selfgen.train.llm.modeling import load_policy
    from selfgen.train.llm.objectives import SFTCollator, SFTObjective, TextPair, completion_token_logprobs

    model, tokenizer = load_policy(ASSET)
    plain = [TextPair("Q:12+5\n", "S:2+5+0=7\nA:17"), TextPair("Q:3+4\n", "A:7")]
    weighted = [TextPair(plain[0].prompt, plain[0].completion, ((10, 11, 4.0),)), plain[1]]  # the "A" of line 2
    collate, objective = SFTCollator(tokenizer), SFTObjective()
    batch = collate(weighted)
    logprobs, mask = completion_token_logprobs(model, batch)
    weights = torch.ones_like(mask)
    row_start = int(batch["completion_mask"][0].nonzero()[0]) - 1  # logprob index of the completion's first token
    weights[0, row_start + 10] = 4.0
    expected = -(logprobs * mask * weights).sum() / (mask * weights).sum()
    torch.testing.assert_close(objective.compute_loss(model, batch)[0], expected)
    assert "loss_weights" not in collate(plain)
    torch.testing.assert_close(
        objective.compute_loss(model, collate(plain))[0], -(logprobs * mask).sum() / mask.sum()
    )


def test_labelled_judgement_pairs_prefer_the_seed_label_even_in_the_minority():
    problem = Problem("1+2", "3", "a")
    texts, verdicts = ["j1 V:Y", "j2 V:N", "j3 V:Y", "j4"], [True, False, True, None]
    pair = SelfRewardDPOTrainer.judgement_pair(problem, "A:4", texts, verdicts, preferred=False)
    assert [(p.chosen, p.rejected) for p in pair] == [("j2 V:N", "j1 V:Y")]  # the label, not the majority
    assert SelfRewardDPOTrainer.judgement_pair(problem, "A:4", texts, verdicts)[0].chosen == "j1 V:Y"
    assert SelfRewardDPOTrainer.judgement_pair(problem, "A:4", texts[:1], verdicts[:1], preferred=False) == []
    with pytest.raises(ValueError, match="labelled_judgements"):
        SelfRewardDPOConfig(labelled_judgements=8)


@needs_asset
def test_score_warm_start_is_iteration_zero_and_becomes_the_kl_reference(tmp_path):
    config = SCoReConfig(
        output_dir=str(tmp_path / "run"), warmup_problems=3, warmup_train_steps=2, warmup_learning_rate=1e-3,
        **{**TINY, "iterations": 1, "max_train_steps": 1},
    )
    trainer = SCoReTrainer(model=str(ASSET), task="arith", config=config)
    report = trainer.train()
    first = report[0]
    assert first["seed_train_steps"] == 2 and first["warmup_anchor_examples"] == 3 * config.samples_per_problem
    assert "base_delta_t1_t2" in first and "delta_t1_t2" in first
    warm = SCoReTrainer(model=str(tmp_path / "run" / "iteration-0" / "model"), task="arith", config=config).policy
    for got, want in zip(trainer.reference.parameters(), warm.parameters()):
        torch.testing.assert_close(got, want)  # the RL stages' reference is the warm-started model
    resumed = SCoReTrainer(model=str(ASSET), task="arith", config=config)
    resumed.config.resume_from = "latest"
    resumed._resume()
    for got, want in zip(resumed.reference.parameters(), warm.parameters()):
        torch.testing.assert_close(got, want)


@needs_asset
def test_labelled_judgements_reuse_the_saved_seed_candidates(tmp_path):
    config = SelfRewardDPOConfig(
        output_dir=str(tmp_path / "run"), num_judgements=2, judge_max_new_tokens=36, eft_problems=6,
        eft_scrambled=4, labelled_judgements=3, **{**TINY, "min_digits": 3, "max_digits": 4, "max_new_tokens": 48},
    )
    trainer = SelfRewardDPOTrainer(model=str(ASSET), task="arith", config=config)
    trainer.seed_round()
    saved = trainer.load_seed_candidates()
    assert [label for _, _, label in saved[-4:]] == [True, False, True, False]  # the scrambled half
    assert all(trainer.task.verify(problem, candidate) == label for problem, candidate, label in saved)
    round_ = trainer.build_round(1)
    assert 0 <= round_.logs["labelled_judgement_pairs"] <= 3
    kinds = ("answer_pairs", "judgement_pairs", "labelled_judgement_pairs")
    assert len(round_.dataset) == sum(round_.logs[kind] for kind in kinds)


def test_v3_configs_load_with_their_turn_2_formats():
    """Issue #18 pass 10: `configs/score_arith_llama_v3.yaml` starts from the headroom base with the turn-2
    format chosen on validation."""
    from selfgen.train.config import load_config

    config = load_config(SCoReConfig, Path(__file__).resolve().parents[3] / "configs" / "score_arith_llama_v3.yaml")
    assert config.model == "assets/lm-arith-llama-v3" and config.prompt_format == "arith_restate"
    assert config.min_digits == config.max_digits == 4 and config.seed == 0
    keep = load_config(SCoReConfig, Path(__file__).resolve().parents[3] / "configs" / "score_arith_llama_v3_keep.yaml")
    assert keep.prompt_format == "arith_swap" and keep.warmup_keep_threshold == pytest.approx(-0.0075)  # session 38's tau
    assert keep.model == config.model and keep.warmup_anchor_correct_only


@needs_asset
def test_warm_start_revision_examples_follow_the_turn_2_format(tmp_path):
    config = SCoReConfig(output_dir=str(tmp_path), warmup_problems=4, prompt_format="arith_restate", **{**TINY, "samples_per_problem": 4})
    trainer = SCoReTrainer(model=str(ASSET), task="arith", config=config)
    dataset = trainer.seed_round().dataset
    revisions = [pair for pair in dataset if "\nR:\n" in pair.prompt]
    assert revisions, "the bundled model solves some 1-2 digit additions, so some revision pairs exist"
    for pair in revisions:
        question = pair.prompt[2 : pair.prompt.index("\n")]
        assert pair.prompt.endswith(f"\nR:\nQ:{question}\n")
        assert trainer.task.verify(Problem(question, str(sum(map(int, question.split("+")))), "q"), pair.completion)  # the target is right


def test_keep_signal_benchmark_keeps_confident_attempts_and_re_solves_the_rest(benchmark_module):
    """``benchmarks/llm_keep_signal.py`` on a hand-made set: the threshold maximising Delta (ties: the lowest,
    which keeps the most), the policy it fixes, and the threshold-free 'keep the likelier attempt' rule."""
    import numpy as np

    bench = benchmark_module("llm_keep_signal")
    first = np.array([True, True, False, False])
    resolve = np.array([False, True, True, False])
    signal = np.array([-0.1, -0.2, -0.9, -0.5])  # the wrong attempts are the least likely
    threshold = bench.choose_threshold(first, resolve, signal)
    assert threshold == pytest.approx(-0.7)  # re-solving only problem 2 fixes it; -0.35 and -0.15 tie, lowest kept
    assert bench.keep_policy(first, resolve, signal, threshold).tolist() == [True, True, True, False]
    assert bench.keep_policy(first, resolve, signal, np.inf).tolist() == resolve.tolist()  # re-solve all
    assert bench.choose_threshold(first, np.zeros(4, bool), signal) == -np.inf  # a useless re-solve: keep all
    result = bench.read(first, resolve, signal, np.array([-0.3, -0.3, -0.3, -0.3]), threshold)
    assert result["delta_t1_t2"] == pytest.approx(0.25) and result["kept"] == pytest.approx(0.75)
    assert result["signal_auc"] == pytest.approx(1.0) and result["oracle_keep"] == pytest.approx(0.25)
    assert result["likelier_delta"] == pytest.approx(0.25)  # re-solves 2 (fixed) and 3 (still wrong)
    assert result["delta_low"] <= 0.25 <= result["delta_high"]
    assert result["over_resolve"] == pytest.approx(0.25)  # keeping problem 0 beats re-solving it


def test_likelihood_keep_pairs_copy_likely_attempts_and_re_solve_the_rest_without_a_verifier():
    """The likelihood-labelled warm start (session 39): the label is the signal alone - a wrong but likely
    attempt is copied, a right but unlikely one is replaced by the re-solve; the threshold itself keeps."""
    contexts = ["c0", "c1", "c2", "c3"]
    attempts = ["A:9", "A:5", "A:7", "A:1"]  # say 0 is wrong and 1 is right: the rule never asks
    resolves = ["A:5", "A:6", None, "A:2"]
    pairs = likelihood_keep_pairs(contexts, attempts, [-0.001, -0.5, -0.9, -0.01], resolves, threshold=-0.01)
    assert [(p.prompt, p.completion) for p in pairs] == [("c0", "A:9"), ("c1", "A:6"), ("c3", "A:1")]  # c2: no re-solve
    assert mean_logprob(Rollout(0, "Q", "A:1", [1], [2, 3], [-0.1, -0.3])) == pytest.approx(-0.2)
    assert mean_logprob(Rollout(0, "Q", "A:1", [1], [2, 3], [-0.1, -0.3], finished=False)) == -float("inf")


@needs_asset
def test_likelihood_warm_start_labels_by_the_signal_in_the_swap_format(tmp_path, monkeypatch):
    config = SCoReConfig(
        output_dir=str(tmp_path), warmup_problems=3, warmup_keep_threshold=-0.05, warmup_anchor_correct_only=True,
        prompt_format="arith_swap", **TINY,
    )
    trainer = SCoReTrainer(model=str(ASSET), task="arith", config=config)
    problems = trainer.task.sample(3, 0)
    answers = [int(p.answer) for p in problems]
    first = [  # attempt 0: wrong but likely (kept); 1: right but unlikely (re-solved); 2: right and likely
        Rollout(0, "", f"A:{answers[0] + 1}", [], [1], [-0.01]),
        Rollout(1, "", f"A:{answers[1]}", [], [1], [-0.5]),
        Rollout(2, "", f"A:{answers[2]}", [], [1], [-0.02]),
    ]
    resolve = [Rollout(i, "", f"A:{answers[i] + 2}", [], [1], [-0.3]) for i in range(3)]
    monkeypatch.setattr(trainer, "keep_signal_attempts", lambda ps: (first, resolve))
    monkeypatch.setattr(trainer.task, "sample", lambda n, seed: problems)
    dataset = trainer.seed_round().dataset
    revisions = [pair for pair in dataset if "\nR:\n" in pair.prompt]
    left, right = problems[1].question.split("+")
    assert revisions[1].prompt.endswith(f"A:{answers[1]}\nR:\nQ:{right}+{left}\n")  # the swapped question
    assert [pair.completion for pair in revisions] == [first[0].text, resolve[1].text, first[2].text]
    anchor = [pair for pair in dataset if "\nR:\n" not in pair.prompt]
    assert [pair.completion for pair in anchor] == [first[0].text, first[2].text]  # the kept ones, not the right ones


def test_position_benchmark_re_solves_the_swapped_question_fresh_after_another_turn_1_and_as_turn_2(benchmark_module):
    """`benchmarks/llm_positions.py`: the three contexts of `b+a` - from position 0, after the NEXT problem's
    prompt and attempt and `R:`, and SCoRe's own `arith_swap` turn 2."""
    positions = benchmark_module("llm_positions")
    contexts = positions.position_contexts(["12+34", "5+6"], ["S:x\nA:46", "S:y\nA:11"])
    assert contexts["fresh"] == ["Q:34+12\n", "Q:6+5\n"]
    assert contexts["other"] == ["Q:5+6\nS:y\nA:11\nR:\nQ:34+12\n", "Q:12+34\nS:x\nA:46\nR:\nQ:6+5\n"]
    assert contexts["own"] == ["Q:12+34\nS:x\nA:46\nR:\nQ:34+12\n", "Q:5+6\nS:y\nA:11\nR:\nQ:6+5\n"]
    with pytest.raises(ValueError, match="need >= 2 questions"):
        positions.position_contexts(["12+34"], ["A:46"])


def test_packed_exact_by_index_splits_rows_at_eos_and_checks_every_completion_token(benchmark_module):
    """`llm_positions.exact_by_index`: examples end at eos (id 1); an example is exact when the argmax before each
    of its completion tokens is that token; prompt tokens are not checked."""
    import torch

    positions = benchmark_module("llm_positions")
    ids = torch.tensor([[5, 6, 7, 1, 5, 8, 9, 1, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 0, 0, 1, 1, 0]])
    right = torch.tensor([[0, 7, 1, 0, 0, 9, 1, 0, 0]])  # predicted[t - 1] == ids[t] on every completion token
    assert positions.exact_by_index(ids, mask, right, 1) == {0: [True], 1: [True]}
    wrong_second = right.clone()
    wrong_second[0, 5] = 4
    assert positions.exact_by_index(ids, mask, wrong_second, 1) == {0: [True], 1: [False]}


def test_reset_greedy_restarts_the_tails_positions_and_matches_plain_greedy_without_a_head(benchmark_module, policy):
    """`llm_positions.reset_greedy`: the head keeps positions 0.., the tail and what follows restart at 0; with no
    head it is plain greedy decoding (the library's, temperature 0)."""
    import torch

    from selfgen.train.llm.rollout import SamplingParams, generate_rollouts

    positions = benchmark_module("llm_positions")
    model, tokenizer = policy
    plain = generate_rollouts(model, tokenizer, ["Q:12+34\n"], SamplingParams(temperature=0.0, max_new_tokens=6, batch_size=1))
    assert positions.reset_greedy(model, tokenizer, "", "Q:12+34\n", 6) == plain[0].text

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, input_ids, position_ids):
            seen.append(position_ids[0].tolist())
            logits = torch.zeros(1, input_ids.shape[1], len(tokenizer))
            logits[0, -1, tokenizer.eos_token_id if len(seen) == 2 else tokenizer.convert_tokens_to_ids("7")] = 1.0
            return type("Out", (), {"logits": logits})

    assert positions.reset_greedy(Recorder(), tokenizer, "ab", "Q:", 5) == "7"
    assert seen == [[0, 1, 0, 1], [0, 1, 0, 1, 2]]
