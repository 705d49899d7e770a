"""ReST-MCTS*: the quality value of eqs. (1)-(2), value inference from traces, MCTS* backup on a
hand-built tree, the official UCT (unvisited: V + 1) and value-greedy roll-forward, trace ranking,
one tiny iteration end to end (with the value model's warm-up on seed data), the SFT-on-ground-truth
control, config errors."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfgen.data.problems import Problem
from selfgen.data.reasoning import Action, critic_prompt, trace_text
from selfgen.data.tasks import derive_seed, extract_answer, solution_steps
from selfgen.train.llm.rest_mcts import (
    Node,
    ReSTMCTSConfig,
    ReSTMCTSTrainer,
    SearchResult,
    StepCriticValue,
    Trace,
    backup,
    best_child,
    infer_values,
    quality_values,
    ranked_correct,
    select,
    uct,
)

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"


def test_quality_values_follow_equations_1_and_2():
    # a correct trace of K = 4 steps (r = 0, m_k = K - k) climbs linearly to 1
    assert quality_values([0, 0, 0, 0], [3, 2, 1, 0]) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # correct, correct, then a wrong step two steps from the end, then a wrong end:
    # v3 = 0.5 - (1 - 0.5) / 2 = 0.25, v4 = max(0.25 - 0.75 / 1, 0) = 0
    assert quality_values([0, 0, 1, 1], [3, 2, 1, 0]) == pytest.approx([0.25, 0.5, 0.25, 0.0])


def test_infer_values_on_a_branching_tree():
    good = Trace(("a", "b", "c"), "9", correct=True)
    bad = Trace(("a", "x", "y"), "7", correct=False)
    targets = infer_values([good, bad])
    # shared first step: on a correct trace, 3 steps (incl. the answer action) from its end
    assert targets[("a",)] == pytest.approx(0.25)
    assert [targets[("a", "b")], targets[("a", "b", "c")], targets[("a", "b", "c", "\nA:9")]] == pytest.approx([0.5, 0.75, 1.0])
    # the wrong branch: r = 1 with m = 2, 1, 0 further steps
    assert targets[("a", "x")] == pytest.approx(0.25 - 0.75 / 3)
    assert targets[("a", "x", "y")] == pytest.approx(0.0)
    assert targets[("a", "x", "y", "\nA:7")] == 0.0


def test_backup_is_the_visit_weighted_mean_of_visited_children():
    root = Node(expanded=True)
    left, right, fresh = Node(("l",), parent=root), Node(("r",), parent=root), Node(("f",), parent=root)
    root.children = [left, right, fresh]
    left.value, left.visits = 0.8, 3
    right.value, right.visits = 0.2, 1
    fresh.value = 0.9  # unvisited: does not enter the mean
    backup(root)
    assert root.visits == 1 and root.value == pytest.approx((3 * 0.8 + 1 * 0.2) / 4)
    leaf = Node(("l", "x"), parent=left, value=0.5)
    left.children, left.expanded = [leaf], True
    leaf.visits = 1
    backup(leaf)  # leaf (not expanded) keeps its value; left becomes the mean of its only visited child
    assert (leaf.visits, left.visits, root.visits) == (2, 4, 2)
    assert left.value == pytest.approx(0.5)
    assert root.value == pytest.approx((4 * 0.5 + 1 * 0.2) / 5)


def test_unvisited_children_score_value_plus_one_as_the_official_code():
    root = Node(expanded=True, visits=4)
    a, b = Node(("a",), parent=root, value=0.9, visits=3), Node(("b",), parent=root, value=0.1)
    root.children = [a, b]
    assert uct(b, root.visits, 1.0) == pytest.approx(1.1)  # V + 1.0, not +inf
    assert select(root, 0.0) is b  # 1.1 > 0.9
    # a visited child can beat an unvisited one: 0.9 + sqrt(2 ln 4 / 3) = 1.86 > 1.1
    assert uct(a, root.visits, 1.0) == pytest.approx(0.9 + math.sqrt(2 * math.log(4) / 3))
    assert select(root, 1.0) is a
    b.visits = 1
    assert select(root, 0.0) is a  # pure exploitation
    assert select(root, 10.0) is b  # exploration favours the less visited child


def test_the_highest_valued_new_child_is_selected_not_the_first_sampled():
    root = Node(expanded=True, visits=1)
    root.children = [Node((s,), parent=root, value=v) for s, v in (("low", 0.2), ("high", 0.7), ("mid", 0.5))]
    assert select(root, 0.2).steps == ("high",)
    assert best_child(root, 0.2).steps == ("high",)


def test_simulation_keeps_the_highest_valued_sampled_step():
    """The official greedy roll-forward: each step, ``roll_branch`` samples; the highest-valued one is kept."""
    proposals = [  # per roll-forward step: the sampled candidates (step text, answer) and their values
        [(("1+1=2", None), 0.3), (("1+1=3", None), 0.6)],
        [(("9", "9"), 0.2), (("2", "2"), 0.9)],
    ]
    calls = []

    class Stub:
        config = ReSTMCTSConfig(roll_branch=2, roll_forward_steps=5)

        def propose(self, problems, states, num, seed):
            calls.append(states)
            return [[Action(step, answer) for (step, answer), _ in proposals[len(calls) - 1]] for _ in states]

        def action_values(self, problems, states, actions):
            return [[value for _, value in proposals[len(calls) - 1]] for _ in states]

        def verify(self, problem, text):
            return text.endswith("A:2")

    node = Node(("0+0=0",))
    [(trace, best)] = ReSTMCTSTrainer.simulate(Stub(), [Problem("q", "2", "0")], [node], seed=0)
    assert calls == [[("0+0=0",)], [("0+0=0", "1+1=3")]]  # the second step extends the higher-valued first step
    assert trace.steps == ("0+0=0", "1+1=3", "2") and trace.answer == "2" and trace.correct
    assert best == pytest.approx(0.9)  # the highest value along the roll-forward


def test_policy_traces_are_sorted_highest_quality_first():
    traces = [
        (Trace(("a", "b"), "3", True), 0.4),
        (Trace(("x",), "3", False), 0.99),  # wrong: never a policy trace
        (Trace(("c",), "3", True), 0.8),
        (Trace(("a", "b"), "3", True), 0.6),  # found again with a higher value
        (Trace(("d", "e", "f"), "3", True), 0.8),  # tie with ("c",): fewer steps first
    ]
    assert ranked_correct(traces) == [("c", "3"), ("d", "e", "f", "3"), ("a", "b", "3")]


def test_answer_rules_pick_by_search_value_terminal_value_or_tree_node():
    """``search``: the value the search recorded (a roll-forward's best value along the way); ``terminal``:
    V_theta of the complete solution; ``tree``: complete tree nodes only (official getBestV), else terminal."""
    rolled = Trace(("1+1=3",), "3", False)  # a roll-forward's end, recorded with a high prefix value
    rolled_right = Trace(("1+1=2",), "2", True)
    node = Trace(("1+1=4",), "4", False, from_tree=True)
    terminal_values = {"3": 0.1, "2": 0.8, "4": 0.5}

    class Stub:
        config = ReSTMCTSConfig(answer="terminal")
        values = staticmethod(lambda states: [terminal_values[answer] for _, _, answer in states])

    problems = [Problem("1+1", "2", "0")] * 2
    results = [
        SearchResult(Node(), [(rolled, 0.95), (rolled_right, 0.7), (node, 0.6)]),
        SearchResult(Node(), [(rolled, 0.95), (rolled_right, 0.7)]),  # no complete tree node
    ]
    pick = lambda rule=None: [t.answer for t in ReSTMCTSTrainer.answers(Stub(), problems, results, rule)]  # noqa: E731
    assert pick("search") == ["3", "3"]
    assert pick("terminal") == pick() == ["2", "2"]
    assert pick("tree") == ["4", "2"]
    with pytest.raises(ValueError, match="answer rule"):
        pick("vote")


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_one_iteration_end_to_end(tmp_path):
    config = ReSTMCTSConfig(
        output_dir=str(tmp_path / "run"), iterations=1, problems_per_iteration=3, eval_problems=3, search_eval_problems=2,
        value_eval_pairs=4, num_rollouts=2, branch=2, max_train_steps=2, value_train_steps=2, train_batch_size=4,
        max_new_tokens=40, max_digits=2, logging_steps=1, value_warmup_problems=2, value_warmup_samples=2, value_warmup_steps=2,
    )
    report = ReSTMCTSTrainer(model=str(ASSET), task="arith", config=config).train()
    warmup = json.loads((tmp_path / "run" / "value-warmup" / "summary.json").read_text())
    assert warmup["value_warmup_examples"] > 0 and (tmp_path / "run" / "value-warmup" / "value" / "config.json").is_file()
    assert [record["iteration"] for record in report.history] == [0, 1]
    record = report[1]
    for key in ("accuracy", "search_accuracy", "value_pair_accuracy", "value_terminal_accuracy", "search_solved"):
        assert 0.0 <= record[key] <= 1.0
    assert record["value_examples"] > 0 and record["expansions_per_s"] > 0 and record["time_rollout_s"] > 0
    assert (tmp_path / "run" / "iteration-1" / "value" / "config.json").is_file()
    assert [json.loads(line)["iteration"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [0, 1]


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_seed_data_values_climb_along_the_worked_solution(tmp_path):
    """D_V0: every prefix of a worked solution of K steps (+ the answer) gets v_k = k / (K + 1) (eqs. 1-2)."""
    config = ReSTMCTSConfig(output_dir=str(tmp_path), eval_problems=2, value_eval_pairs=2, max_digits=2, max_new_tokens=40,
                            value_warmup_problems=3, value_warmup_samples=2, value_warmup_steps=1)
    trainer = ReSTMCTSTrainer(model=str(ASSET), task="arith", config=config)
    targets = dict(trainer.seed_value_examples())
    for problem in trainer.task.sample(3, derive_seed(0, "value-warmup")):
        worked = trainer.task.worked_solution(problem)
        steps, answer = solution_steps(worked), extract_answer(worked)
        size = len(steps) + 1
        for k in range(1, len(steps) + 1):
            assert targets[trace_text(problem.question, steps[:k])] == pytest.approx(k / size, abs=1e-9)
        assert targets[trace_text(problem.question, steps, answer)] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_ground_truth_control_copies_the_method_runs_counts(tmp_path):
    method_run = tmp_path / "method"
    method_run.mkdir()
    (method_run / "metrics.jsonl").write_text(json.dumps({"iteration": 0}) + "\n" + json.dumps({"iteration": 1, "policy_traces": 2.0}) + "\n")
    config = ReSTMCTSConfig(output_dir=str(tmp_path / "control"), eval_problems=2, value_eval_pairs=2, problems_per_iteration=4,
                            max_digits=2, ground_truth_control_of=str(method_run))
    trainer = ReSTMCTSTrainer(model=str(ASSET), task="arith", config=config)
    round_ = trainer.build_round(1)
    problems = trainer.problems(1)
    assert [(pair.prompt, pair.completion) for pair in round_.dataset] == [
        (trainer.prompt(p), trainer.task.worked_solution(p)) for p in problems[:2]
    ]
    assert "search_accuracy" not in trainer.evaluate()
    with pytest.raises(ValueError, match="ground_truth_control_of.*iteration 2"):
        trainer.build_round(2)
    trainer.config.ground_truth_control_of = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="ground_truth_control_of"):
        trainer.build_round(1)


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_value_auc_labels_prefixes_by_the_worked_solution(tmp_path):
    """An oracle value (partial solutions: 1 on prefixes of the worked solution; complete ones: 1 on the
    right answer) ranks perfectly; its inverse ranks at 0."""
    config = ReSTMCTSConfig(output_dir=str(tmp_path), eval_problems=8, value_eval_pairs=2, min_digits=4, max_digits=4, max_new_tokens=64)
    trainer = ReSTMCTSTrainer(model=str(ASSET), task="arith", config=config)
    on_path, answers = set(), {}
    for problem in trainer.eval_set:
        steps = tuple(solution_steps(trainer.task.worked_solution(problem)))
        on_path |= {(problem.question, steps[:k]) for k in range(1, len(steps) + 1)}
        answers[problem.question] = problem.answer

    def oracle(state) -> bool:
        question, steps, answer = state
        return answer == answers[question] if answer is not None else (question, steps) in on_path

    trainer.values = lambda states: [float(oracle(state)) for state in states]
    assert trainer.value_auc(trainer.eval_set, num_samples=4) == {"value_prefix_auc": 1.0, "value_terminal_auc": 1.0}
    trainer.values = lambda states: [float(not oracle(state)) for state in states]
    assert trainer.value_auc(trainer.eval_set, num_samples=4) == {"value_prefix_auc": 0.0, "value_terminal_auc": 0.0}


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="branch"):
        ReSTMCTSConfig(branch=0)
    with pytest.raises(ValueError, match="alpha"):
        ReSTMCTSConfig(alpha=1.5)
    with pytest.raises(ValueError, match="step_temperature"):
        ReSTMCTSConfig(step_temperature=0.0)
    with pytest.raises(ValueError, match="value_warmup_problems"):
        ReSTMCTSConfig(value_warmup_steps=10)
    with pytest.raises(ValueError, match="answer"):
        ReSTMCTSConfig(answer="vote")
    with pytest.raises(ValueError, match="value_critic"):
        ReSTMCTSConfig(value_kind="critic")
    with pytest.raises(ValueError, match="value_aggregate"):
        ReSTMCTSConfig(value_aggregate="mean")


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_step_critic_value_is_the_product_or_min_of_teacher_forced_rederivations():
    """p_k = P(critic writes "D:<step_k> vs " after the critic prompt), by hand from one forward pass over the
    joined ids; V = prod_k p_k (or min); a child of a valued state costs one new critic row."""
    tokenizer = AutoTokenizer.from_pretrained(ASSET)
    critic = AutoModelForCausalLM.from_pretrained(ASSET, dtype=torch.float32).eval()
    question, steps = "47+85", ("7+5+0=12", "4+8+1=13")

    def by_hand(prefix, step) -> float:
        prompt_ids = tokenizer(critic_prompt(question, prefix, step), add_special_tokens=False).input_ids
        ids = tokenizer(critic_prompt(question, prefix, step) + f"D:{step} vs ", add_special_tokens=False).input_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(critic(torch.tensor([ids])).logits[0, :-1].float(), -1)
        return math.exp(sum(logprobs[i - 1, ids[i]].item() for i in range(len(prompt_ids), len(ids))))

    p1, p2 = by_hand((), steps[0]), by_hand(steps[:1], steps[1])
    value = StepCriticValue(critic, tokenizer)
    assert value([(question, steps[:1], None)]) == pytest.approx([p1], rel=1e-4) and value.rows == 1
    assert value([(question, steps, "132")]) == pytest.approx([p1 * p2], rel=1e-4) and value.rows == 2  # cached p1
    assert 0 < p1 * p2 < min(p1, p2) <= 1
    assert StepCriticValue(critic, tokenizer, aggregate="min")([(question, steps, None), (question, (), None)]) == pytest.approx(
        [min(p1, p2), 1.0], rel=1e-4
    )
    with pytest.raises(ValueError, match="aggregate"):
        StepCriticValue(critic, tokenizer, aggregate="mean")


def test_bundled_config_loads():
    from selfgen.train.config import load_config
    from selfgen.train.llm import rest_mcts

    config = load_config(rest_mcts.METHOD.config_class, ASSET.parents[1] / "configs" / "rest_mcts_arith.yaml")
    assert rest_mcts.METHOD.name == "rest_mcts" and config.seed == 0 and config.branch >= 2
