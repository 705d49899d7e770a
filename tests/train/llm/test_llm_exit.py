"""ExIt: the learnability buffer, the quality-gain reward, the diversity bonus, and that a round trains
single improvement steps on buffered partial histories and grows them by one attempt."""

import random
from pathlib import Path

import pytest

from selfgen.data.problems import Problem
from selfgen.train.llm.exploratory_iteration import (
    ExItConfig,
    ExItTrainer,
    Instance,
    LearnabilityBuffer,
    diversity_distances,
    group_variance,
)

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
needs_asset = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
PROBLEM = Problem(question="47+85", answer="132", id="p")


def test_group_variance_is_the_learnability_score():
    assert group_variance([1.0, 0.0, 1.0, 0.0]) == pytest.approx(0.25)
    assert group_variance([1.0, 1.0, 1.0]) == 0.0
    assert group_variance([0.5, -0.5]) == pytest.approx(0.25)


def test_buffer_drops_unlearnable_evicts_lowest_and_samples_by_score():
    buffer = LearnabilityBuffer(capacity=2, rng=random.Random(0))
    zero, low, high, mid = (Instance(PROBLEM, (f"A:{i}",), s) for i, s in enumerate((0.0, 0.01, 0.24, 0.1)))
    buffer.add(zero)
    assert len(buffer) == 0
    for item in (low, high, mid):
        buffer.add(item)
    assert buffer.items == [high, mid]  # the lowest (0.01) was evicted
    counts = {"high": 0, "mid": 0}
    for _ in range(2000):
        (drawn,) = buffer.sample(1)
        counts["high" if drawn is high else "mid"] += 1
        buffer.rescore(drawn, drawn.score)
    assert counts["high"] / 2000 == pytest.approx(0.24 / 0.34, abs=0.04)
    (drawn,) = buffer.sample(1)
    buffer.rescore(drawn, 0.0)  # a group with equal returns: no longer learnable
    assert len(buffer) == 1 and drawn not in buffer.items


def test_diversity_distance_singles_out_the_different_text():
    same = diversity_distances(["S:1+2=3\nA:3"] * 3)
    assert same == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    mixed = diversity_distances(["S:1+2=3\nA:3", "S:1+2=3\nA:3", "S:9*9=81,7*7=49\nA:4981"])
    assert mixed[2] > 2 * mixed[0] > 0.0


@needs_asset
def test_reward_is_the_quality_gain_and_the_bonus_applies_to_divergence_only(tmp_path):
    trainer = ExItTrainer(model=str(ASSET), config=ExItConfig(output_dir=str(tmp_path), eval_problems=2, task="add"))
    previous = Instance(PROBLEM, ("S:7+5+0=12,4+8+1=14\nA:142",))  # quality 2/3
    texts = ["A:132", "A:142", "A:999"]
    assert trainer.step_rewards(previous, texts, diverge=False) == pytest.approx([1 / 3, 0.0, -2 / 3])
    assert trainer.step_rewards(Instance(PROBLEM), texts, diverge=False) == pytest.approx([1.0, 2 / 3, 0.0])
    bonus = trainer.step_rewards(previous, texts, diverge=True)
    distances = diversity_distances(texts)
    assert bonus == pytest.approx([g * (1 + d) for g, d in zip([1 / 3, 0.0, -2 / 3], distances)])
    assert trainer.step_prompt(previous, diverge=False) == "Q:47+85\nS:7+5+0=12,4+8+1=14\nA:142\nR:\n"
    assert trainer.step_prompt(previous, diverge=True) == "Q:47+85\nS:7+5+0=12,4+8+1=14\nA:142\nF:N\nR:\n"


@needs_asset
def test_a_round_improves_buffered_histories_and_grows_them(tmp_path):
    config = ExItConfig(
        output_dir=str(tmp_path), task="add", max_digits=2, eval_problems=2, problems_per_iteration=3,
        samples_per_problem=4, new_task_probability=0.0, divergence_probability=0.0, max_new_tokens=24,
    )
    trainer = ExItTrainer(model=str(ASSET), config=config)
    seeds = [Instance(Problem(question=f"{a}+{a}", answer=str(2 * a), id=str(a)), (f"S:x\nA:{a}",), 0.2) for a in (3, 4, 5)]
    for item in seeds:
        trainer.buffer.add(item)
    round_ = trainer.build_round(1)
    assert round_.logs["replayed"] == 1.0 and round_.logs["mean_depth"] == 1.0
    assert len(round_.dataset) == 12  # one GRPO sample per continuation: single steps only
    prompts = {trainer.tokenizer.decode(s.prompt_ids) for s in round_.dataset}
    assert prompts == {trainer.format.revision(i.problem.question, i.history[-1]) for i in seeds}
    children = [item for item in trainer.buffer.items if item.depth == 2]
    assert all(child.history[0] in {i.history[0] for i in seeds} and child.score > 0 for child in children)
    assert all(item.score > 0 for item in trainer.buffer.items)


@needs_asset
def test_revision_chain_continues_the_latest_attempt_only(monkeypatch):
    from selfgen.train.llm import exploratory_iteration as module
    from selfgen.train.llm.modeling import load_policy
    from selfgen.train.llm.prompts import PromptFormat

    model, tokenizer = load_policy(ASSET)
    calls = []
    real = module.sample_revisions

    def recording(*args, **kwargs):
        episodes = real(*args, **kwargs)
        calls.append((kwargs.get("first_attempts"), [e.texts for e in episodes]))
        return episodes

    monkeypatch.setattr(module, "sample_revisions", recording)
    problems = [PROBLEM, Problem(question="3+4", answer="7", id="q")]
    chains = module.revision_chain(model, tokenizer, PromptFormat(), problems, revisions=2, max_new_tokens=24)
    assert [len(chain) for chain in chains] == [3, 3] and len(calls) == 3
    assert calls[1][0] == [chain[0] for chain in chains] and calls[2][0] == [chain[1] for chain in chains]
    assert [texts[1] for texts in calls[2][1]] == [chain[2] for chain in chains]
