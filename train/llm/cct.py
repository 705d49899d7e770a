"""CCT: Confidence and Critique Improvement Tuning (Yang et al., ACL 2025, "Confidence v.s. Critique:
A Decomposition of Self-Correction Capability for LLMs", arXiv:2412.19513).

The paper decomposes the accuracy after a self-correction turn as ``Acc2 = Acc1 CL + (1 - Acc1) CS``
with the confidence level ``CL = P(right after | right before)`` and the critique score
``CS = P(right after | wrong before)`` (:mod:`selfgen.eval.self_correction`), and improves both by
transforming SFT data: the model's own first answers to training questions, judged against the
reference, become second-turn examples -

* **confidence** (CLT): a right first answer ``y1`` is followed, after the self-correction prompt, by
  keeping it: ``revision(x, y1) -> y1``;
* **critique** (CST): a wrong first answer is followed by its fix, the reference solution:
  ``revision(x, y1) -> y*``;

and CCT trains on both together, with the plain SFT examples ``x -> y*`` of the same questions
(the paper's "combined with SFT"). Here ``revision`` is the recipe's format's plain revision turn
(``R:``, no feedback line: the self-correction prompt), ``y1`` are ``samples_per_problem`` samples
of the current policy at ``temperature`` and ``y*`` the task's worked solution.

The matched control (``examples: sft``) is vanilla SFT: the same problems' ``x -> y*`` only, the same
steps, batch and learning rate. Evaluation is greedy: a first attempt, then the plain revision turn
(:meth:`IterativeTrainer.correction_eval`: Acc@t1, Acc@t2, CL, CS, RSS with standard errors).

Departures: one round (``iterations: 1``) on fresh seeded training problems of our synthetic tasks
(the paper fine-tunes instruction models on its own datasets); the optional seed round
(``seed_problems``, :mod:`selfgen.train.llm.correction`) teaches the feedback/correction formats
first and is shared by both arms. The paper's exact mixing ratio of the three example kinds was not
available to us (we could read its abstract and summary, not its data-construction section): here
every sample gives one second-turn example and every problem one plain example.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...data.problems import Problem
from ..registry import Method
from .correction import CorrectionSeedConfig, correction_seed_round
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .objectives import SFTCollator, SFTObjective, TextPair

CCT_EXAMPLES = ("cct", "sft")


@dataclass
class CCTConfig(IterativeConfig, CorrectionSeedConfig):
    iterations: int = 1
    samples_per_problem: int = 4
    temperature: float = 1.0
    examples: str = "cct"  # cct | sft (the vanilla-SFT control: the same problems' reference solutions only)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.examples not in CCT_EXAMPLES:
            raise ValueError(f"examples must be one of {CCT_EXAMPLES}, got {self.examples!r}")


def cct_examples(
    trainer: IterativeTrainer, problems: list[Problem], attempts: list[list[str]], verdicts: list[list[bool]]
) -> tuple[list[TextPair], list[TextPair]]:
    """The confidence (right attempt -> itself) and critique (wrong attempt -> reference solution)
    second-turn examples of ``attempts[i]``, problem i's own samples, judged by ``verdicts[i]``."""
    confidence, critique = [], []
    for problem, samples, correct in zip(problems, attempts, verdicts, strict=True):
        solution = trainer.task.worked_solution(problem)
        for attempt, ok in zip(samples, correct, strict=True):
            prompt = trainer.format.revision(problem.question, attempt)
            (confidence if ok else critique).append(TextPair(prompt, attempt if ok else solution))
    return confidence, critique


class CCTTrainer(IterativeTrainer):
    config_class = CCTConfig
    uses_reward_fn = False  # correctness is verify (a user's verify_fn=)
    plot_keys = ("accuracy_t1", "accuracy_t2", "confidence_level", "critique_score")
    seed_round = correction_seed_round

    def evaluate(self) -> dict[str, float]:
        metrics = self.correction_eval(self.eval_set)
        return {"accuracy": metrics["accuracy_t2"], **metrics}

    def build_round(self, iteration: int) -> Round:
        config, k = self.config, self.config.samples_per_problem
        problems = self.problems(iteration)
        examples = [TextPair(self.prompt(p), self.task.worked_solution(p)) for p in problems]
        logs = {"sft_examples": float(len(examples))}
        if config.examples == "cct":
            texts = [r.text for r in self.solve(problems, seed=iteration)]
            attempts = [texts[i * k : (i + 1) * k] for i in range(len(problems))]
            verdicts = [[self.verify(p, t) for t in group] for p, group in zip(problems, attempts)]
            confidence, critique = cct_examples(self, problems, attempts, verdicts)
            examples += confidence + critique
            logs.update({"confidence_examples": float(len(confidence)), "critique_examples": float(len(critique))})
        return Round(SFTObjective(), examples, SFTCollator(self.tokenizer, config.max_length), logs)


METHOD = Method(
    name="cct",
    summary="CCT: SFT with confidence (keep a right own answer) and critique (fix a wrong one) revision turns",
    config_class=CCTConfig,
    train=run_recipe(CCTTrainer),
)
