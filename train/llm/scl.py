"""SCL: Self-Correction Learning (He et al., 2024, "Self-Correction is More than Refinement: A Learning
Framework for Visual and Language Reasoning Tasks"; official code ivy3h/SCL).

The policy answers each training question, then revises its answer under a self-correction prompt
(two turns, sampled: the official data construction samples both turns at temperature 0.7, one
episode per question). Only episodes whose answer **flips** become preference pairs, always on the
**plain** question prompt ``x`` (never the revision prompt):

* right -> wrong (``y1`` right, ``y2`` wrong): ``(x, chosen=y1, rejected=y2)``;
* wrong -> right: ``(x, chosen=y2, rejected=y1)``;
* unchanged correctness: no pair.

The pairs train the policy by DPO (``beta``) against a frozen copy of the round's starting policy;
the test is the *first* answer: greedy Acc@t1 without any self-correction at inference (self-
correction as a way to build preference data, "more than refinement").

The matched control (``pairs: verifier``) is DPO with verifier-paired plain samples at the same
generation budget: ``2 x samples_per_problem`` plain samples per question (SCL's two turns per
episode), within each question a right sample preferred over a wrong one (right and wrong samples
zipped in order), the same DPO steps, batch, beta and learning rate.

Departures: the revision turn is the format's plain ``R:`` turn (our base model's self-correction
prompt) rather than the paper's natural-language review instruction; fresh seeded training problems
of our synthetic tasks instead of the paper's visual QA sets; the optional seed round
(``seed_problems``, :mod:`selfgen.train.llm.correction`) teaches the correction formats first and is
shared by both arms; ``iterations`` > 1 repeats the construction on the updated policy (the paper
does one round).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...data.problems import Problem
from ..registry import Method
from .correction import CorrectionSeedConfig, correction_seed_round
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .modeling import frozen_copy
from .objectives import DPOCollator, DPOObjective, PreferencePair
from .revision import Episode

SCL_PAIRS = ("flips", "verifier")


@dataclass
class SCLConfig(IterativeConfig, CorrectionSeedConfig):
    iterations: int = 1
    samples_per_problem: int = 1  # two-turn episodes per question (the official construction: one)
    temperature: float = 0.7  # both turns (the official construction's sampling temperature)
    beta: float = 0.1
    learning_rate: float = 5e-5
    pairs: str = "flips"  # flips (SCL) | verifier (control: verifier-paired plain samples, same budget)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pairs not in SCL_PAIRS:
            raise ValueError(f"pairs must be one of {SCL_PAIRS}, got {self.pairs!r}")


def flip_pairs(prompts: list[str], episodes: list[Episode]) -> list[PreferencePair]:
    """SCL's pairs: ``episodes[i]`` (two verified turns) on the plain prompt ``prompts[i]``; only flips."""
    pairs = []
    for prompt, episode in zip(prompts, episodes, strict=True):
        (y1, y2), (c1, c2) = episode.texts, episode.correct
        if c1 and not c2:
            pairs.append(PreferencePair(prompt, y1, y2))
        elif c2 and not c1:
            pairs.append(PreferencePair(prompt, y2, y1))
    return pairs


def verifier_pairs(prompt: str, samples: list[str], correct: list[bool]) -> list[PreferencePair]:
    """The control's pairs for one question: its right samples zipped with its wrong ones."""
    right = [s for s, ok in zip(samples, correct) if ok]
    wrong = [s for s, ok in zip(samples, correct) if not ok]
    return [PreferencePair(prompt, chosen, rejected) for chosen, rejected in zip(right, wrong)]


class SCLTrainer(IterativeTrainer):
    config_class = SCLConfig
    uses_reward_fn = False  # correctness is verify (a user's verify_fn=)
    plot_keys = ("accuracy_t1", "accuracy_t2", "delta_t1_t2")
    seed_round = correction_seed_round

    def evaluate(self) -> dict[str, float]:
        metrics = self.correction_eval(self.eval_set)
        return {"accuracy": metrics["accuracy_t1"], **metrics}

    def pairs(self, problems: list[Problem], iteration: int) -> list[PreferencePair]:
        k = self.config.samples_per_problem
        if self.config.pairs == "flips":
            episodes = self.revisions(problems, rounds=2, seed=iteration)
            return flip_pairs([self.prompt(problems[e.problem_index]) for e in episodes], episodes)
        texts = [r.text for r in self.solve(problems, num_samples=2 * k, seed=iteration)]
        pairs = []
        for i, problem in enumerate(problems):
            group = texts[i * 2 * k : (i + 1) * 2 * k]
            pairs += verifier_pairs(self.prompt(problem), group, [self.verify(problem, t) for t in group])
        return pairs

    def build_round(self, iteration: int) -> Round:
        config = self.config
        problems = self.problems(iteration)
        pairs = self.pairs(problems, iteration)
        if not pairs:
            raise ValueError(
                f"SCL iteration {iteration} found no preference pairs in {len(problems)} problems "
                f"(pairs={config.pairs!r}); raise problems_per_iteration or samples_per_problem"
            )
        logs = {"pairs": float(len(pairs)), "pairs_per_problem": len(pairs) / len(problems)}
        objective = DPOObjective(frozen_copy(self.policy), beta=config.beta)
        return Round(objective, pairs, DPOCollator(self.tokenizer, config.max_length), logs)


METHOD = Method(
    name="scl",
    summary="SCL: DPO on two-turn self-correction flips (right->wrong prefers y1, wrong->right y2), plain prompt",
    config_class=SCLConfig,
    train=run_recipe(SCLTrainer),
)
