"""ReST-EM (Singh et al., 2023, "Beyond Human Data: Scaling Self-Training for Problem-Solving with Language Models").

Expectation-maximisation with a binary reward:

* **E-step** - the current policy samples ``samples_per_problem`` solutions per training problem at
  ``temperature``; the verifier gives each a reward ``r in {0, 1}``; the correct ones are kept, at most
  ``max_per_problem`` distinct ones per problem (the paper caps per-problem solutions so easy problems
  do not dominate);
* **M-step** - the **base** model (not the previous iterate) is fine-tuned on the kept samples by
  maximising ``sum r * log p(y | x)`` (SFT on the completions), which gives the next policy.

**Matched control** (``ground_truth_control: true``, not part of the paper; issue #18): the same loop and
draws, but the M-step fine-tunes the base model on the reference worked solutions
(``task.worked_solution``) of the first ``n`` problems of the iteration's draws, ``n`` = the number of
samples ReST-EM kept, for the same steps: what self-generated solutions add beyond supervised training on
as many ground-truth ones.

Departure: problems are fresh seeded draws each iteration instead of one fixed dataset.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .objectives import SFTCollator, SFTObjective, TextPair


@dataclass
class ReSTEMConfig(IterativeConfig):
    samples_per_problem: int = 8
    temperature: float = 1.0
    max_per_problem: int = 4
    ground_truth_control: bool = False  # SFT on as many reference worked solutions instead (the control)


class ReSTEMTrainer(IterativeTrainer):
    """The binary reward is :meth:`~selfgen.train.llm.driver.IterativeTrainer.verify` (a user's ``verify_fn=``)."""

    config_class = ReSTEMConfig
    uses_reward_fn = False
    plot_keys = ("accuracy", "e_step_accuracy", "problems_solved")

    def build_round(self, iteration: int) -> Round:
        config, k = self.config, self.config.samples_per_problem
        problems = self.problems(iteration)
        texts = [r.text for r in self.solve(problems, seed=iteration)]
        rewards = [float(self.verify(p, text)) for p, text in zip([p for p in problems for _ in range(k)], texts)]
        rng = random.Random(config.seed + iteration)
        examples, solved = [], 0
        for index, problem in enumerate(problems):
            group = zip(texts[index * k : (index + 1) * k], rewards[index * k : (index + 1) * k])
            correct = list(dict.fromkeys(text for text, reward in group if reward > 0))
            rng.shuffle(correct)
            solved += bool(correct)
            examples += [TextPair(self.prompt(problem), text) for text in correct[: config.max_per_problem]]
        if config.ground_truth_control:
            examples = [TextPair(self.prompt(p), self.task.worked_solution(p)) for p in problems[: len(examples)]]
        logs = {"e_step_accuracy": sum(rewards) / len(rewards), "problems_solved": solved / len(problems)}
        return Round(SFTObjective(), examples, SFTCollator(self.tokenizer, config.max_length), logs, from_base=True)


METHOD = Method(
    name="rest_em",
    summary="ReST-EM: sample, keep verifier-correct solutions, fine-tune the base model on them; repeat",
    config_class=ReSTEMConfig,
    train=run_recipe(ReSTEMTrainer),
)
