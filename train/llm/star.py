"""STaR: Self-Taught Reasoner (Zelikman et al., 2022), with rationalisation.

Each outer iteration n:

1. the current policy writes a rationale + answer for every training problem;
2. for the problems it got wrong, it is prompted again *with the answer as a hint* (``H:<answer>``,
   rationalisation) and the hinted rationales that reach the right answer are kept too, stored
   **without** the hint, as if the model had produced them unaided;
3. the **base** model is fine-tuned (SFT on the completion tokens) on all correct rationales, with
   the number of steps growing by ``step_growth`` (20% in the paper) per iteration;
4. the fine-tuned model becomes the policy of the next iteration.

Departure: problems are fresh seeded draws each iteration instead of one fixed dataset (same
distribution); decoding is greedy by default (``temperature: 0``), one rationale per problem. With
``samples_per_problem: K > 1`` (B-STaR's budget, ``configs/star_countdown_llama.yaml``) every
*distinct* correct sample of a problem is kept, and only the problems with none correct are
rationalised (one hinted sample each).

**Matched control** (``ground_truth_control: true``, not part of the paper): the same loop, but step 3
fine-tunes the base model on the reference worked solutions (``task.worked_solution``) of as many
problems as STaR kept, the first ``n`` of the iteration's fresh draws (unfiltered by success), for
the same steps. STaR's gain over this control is what self-generated rationales add beyond
continued supervised training of the base on the same amount of labelled data.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .objectives import SFTCollator, SFTObjective, TextPair


@dataclass
class STaRConfig(IterativeConfig):
    temperature: float = 0.0
    samples_per_problem: int = 1
    rationalize: bool = True
    step_growth: float = 0.2
    ground_truth_control: bool = False  # SFT on as many reference worked solutions instead (the control)


class STaRTrainer(IterativeTrainer):
    """Correctness is :meth:`~selfgen.train.llm.driver.IterativeTrainer.verify` (a user's ``verify_fn=``)."""

    config_class = STaRConfig
    uses_reward_fn = False
    plot_keys = ("accuracy", "train_accuracy", "rationalized")

    def build_round(self, iteration: int) -> Round:
        config = self.config
        problems, k = self.problems(iteration), config.samples_per_problem
        texts = [r.text for r in self.solve(problems, seed=iteration)]
        correct = [
            (p, text) for i, p in enumerate(problems)
            for text in dict.fromkeys(t for t in texts[i * k : (i + 1) * k] if self.verify(p, t))
        ]
        solved = {p.id for p, _ in correct}
        failed = [p for p in problems if p.id not in solved]
        rationalized = []
        if config.rationalize and failed:
            hinted = [self.prompt(p, hint=True) for p in failed]
            hinted_rollouts = self.sample(hinted, num_samples=1, seed=iteration)
            rationalized = [(p, r.text) for p, r in zip(failed, hinted_rollouts) if self.verify(p, r.text)]
        examples = [TextPair(self.prompt(p), text) for p, text in correct + rationalized]
        if config.ground_truth_control:
            examples = [TextPair(self.prompt(p), self.task.worked_solution(p)) for p in problems[: len(examples)]]
        steps = round(config.max_train_steps * (1 + config.step_growth) ** (iteration - 1))
        logs = {
            "train_accuracy": len(solved) / len(problems),
            "rationalized": len(rationalized) / len(problems),
        }
        collator = SFTCollator(self.tokenizer, config.max_length)
        return Round(SFTObjective(), examples, collator, logs, from_base=True, max_train_steps=steps)


METHOD = Method(
    name="star",
    summary="STaR: fine-tune the base LM on its own correct rationales, with answer-hinted rationalisation",
    config_class=STaRConfig,
    train=run_recipe(STaRTrainer),
)
