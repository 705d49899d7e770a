"""ExIt: Exploratory Iteration (Jiang, Lupu & Bachrach, 2025, "Bootstrapping Task Spaces for Self-Improvement").

ExIt trains multi-step self-improvement while only ever training **single** improvement steps. A
task instance is a problem plus a partial history of earlier attempts; the policy writes one new
attempt; the instance and the new attempt become new instances. Each iteration (one GRPO round):

1. **Instances** - ``problems_per_iteration`` of them: with probability ``new_task_probability`` a
   fresh training problem (turn 0, an attempt from scratch), else a partial history drawn from the
   buffer with probability proportional to its **learnability** score;
2. **One step** - ``G = samples_per_problem`` continuations per instance: a fresh problem is
   attempted (``fmt.prompt``); a history is **improved** (``fmt.revision(question, last attempt)``,
   the plain revision turn) or, with probability ``divergence_probability``, **diverged** (the
   self-divergence prompt: ``fmt.revision(question, last attempt, Feedback(False))``, i.e. "this is
   wrong: write a different solution");
3. **Reward** - the quality gain ``r = q(y) - q(y_prev)`` with ``q`` the task's graded
   :meth:`~selfgen.data.tasks.Task.quality` (``q(y_prev) = 0`` on a fresh problem); on divergence
   steps the paper's multiplicative diversity bonus ``r * (1 + diversity_bonus * d)``, ``d`` the
   distance of the continuation's embedding from its group's centroid (:func:`diversity_distances`);
4. **GRPO** on these single steps (group-normalised advantages, clipped surrogate, k3 KL to the
   starting model; :class:`~selfgen.train.llm.grpo.GRPOTrainer`);
5. **Buffer update** - the instance's learnability is the variance of its group's returns,
   ``S = Var_i(r_i)`` (the groups GRPO learns from: zero when every continuation scores the same);
   a buffer instance is rescored with it (dropped at zero), and the history extended by one of the
   group's continuations (chosen uniformly) enters the buffer with the same score when it is positive.
   The buffer holds ``buffer_size`` instances; the lowest-scored is evicted first.

So the depth of the histories trained on grows by itself (logged: ``mean_depth``, ``max_depth``),
and held-out evaluation runs ``eval_revisions`` revision steps past the first attempt, greedy, with
Acc@t1..t(K+1) per step (:mod:`selfgen.eval.self_correction`), ``accuracy`` being the last one.

Departures: the context of a step holds the question and the **latest** attempt only (our compact
revision format; the paper's math prompt likewise shows the previous solution, not the whole chain);
the embedding of the diversity bonus is a character-trigram count vector (no sentence-embedding
model here); learnability sampling is proportional to the score (no rank transform); problems are
fresh seeded draws from the training split.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ...data.problems import Problem
from ...data.reasoning import Feedback
from ...data.tasks import derive_seed
from ...eval.self_correction import flat_metrics, self_correction_metrics
from ..registry import Method
from .driver import Round, run_recipe
from .grpo import GRPOConfig, GRPOTrainer
from .revision import sample_revisions

DIVERGE = Feedback(False)  # the self-divergence request: "the last attempt is wrong; write a different one"


@dataclass
class Instance:
    """A self-improvement task instance: a problem and the attempts so far (empty: a fresh problem)."""

    problem: Problem
    history: tuple[str, ...] = ()
    score: float = 0.0  # learnability: the variance of the group returns when it was last iterated

    @property
    def depth(self) -> int:
        return len(self.history)


class LearnabilityBuffer:
    """Partial histories prioritised by learnability; see the module docstring (step 5)."""

    def __init__(self, capacity: int, rng: random.Random) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.rng, self.items = capacity, rng, []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, instance: Instance) -> None:
        """Insert ``instance`` when its score is positive, evicting the lowest-scored when full."""
        if instance.score <= 0:
            return
        self.items.append(instance)
        if len(self.items) > self.capacity:
            self.items.remove(min(self.items, key=lambda item: item.score))

    def sample(self, count: int) -> list[Instance]:
        """Up to ``count`` distinct instances, drawn without replacement with probability proportional
        to score; they leave the buffer until :meth:`rescore` returns them."""
        chosen = []
        for _ in range(min(count, len(self.items))):
            weights = [item.score for item in self.items]
            index = self.rng.choices(range(len(self.items)), weights=weights)[0]
            chosen.append(self.items.pop(index))
        return chosen

    def rescore(self, instance: Instance, score: float) -> None:
        """Return a drawn instance with its new learnability score (dropped when it is zero)."""
        instance.score = score
        self.add(instance)


def group_variance(returns: Sequence[float]) -> float:
    """The learnability score of a group: the (population) variance of its returns."""
    mean = sum(returns) / len(returns)
    return sum((r - mean) ** 2 for r in returns) / len(returns)


def trigram_vector(text: str) -> Counter:
    return Counter(text[i : i + 3] for i in range(max(len(text) - 2, 1)))


def diversity_distances(texts: Sequence[str]) -> list[float]:
    """Per text, ``1 - cos(v, centroid)`` of its unit-normalised character-trigram vector ``v`` and the
    group's mean vector: 0 for a text like the rest, up to 1 for one sharing nothing with them."""
    vectors = []
    for text in texts:
        counts = trigram_vector(text)
        norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
        vectors.append({key: value / norm for key, value in counts.items()})
    centroid: Counter = Counter()
    for vector in vectors:
        centroid.update({key: value / len(vectors) for key, value in vector.items()})
    centroid_norm = math.sqrt(sum(v * v for v in centroid.values())) or 1.0
    return [1.0 - sum(value * centroid[key] for key, value in v.items()) / centroid_norm for v in vectors]


@dataclass
class ExItConfig(GRPOConfig):
    task: str = "add_hard"
    samples_per_problem: int = 8  # G continuations per instance
    problems_per_iteration: int = 64  # task instances per GRPO round
    new_task_probability: float = 0.5  # a fresh problem (turn 0) instead of a buffered partial history
    buffer_size: int = 512
    divergence_probability: float = 0.2  # buffered instances given the self-divergence prompt
    diversity_bonus: float = 1.0  # multiplicative bonus on divergence steps' rewards
    eval_revisions: int = 6  # held-out: revision steps after the first attempt (K)
    beta: float = 0.04
    learning_rate: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("new_task_probability", "divergence_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.diversity_bonus < 0 or self.eval_revisions < 1 or self.buffer_size < 1:
            raise ValueError(
                "diversity_bonus must be >= 0, eval_revisions and buffer_size >= 1; got "
                f"{self.diversity_bonus}, {self.eval_revisions}, {self.buffer_size}"
            )


class ExItTrainer(GRPOTrainer):
    config_class = ExItConfig
    uses_reward_fn = False  # the reward is the task's quality gain
    plot_keys = ("accuracy_t1", "accuracy", "train_reward", "mean_depth", "buffer_size")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rng = random.Random(derive_seed(self.config.seed, "exit"))
        self.buffer = LearnabilityBuffer(self.config.buffer_size, self.rng)

    def instances(self, iteration: int) -> list[Instance]:
        """This round's instances: fresh problems with probability ``new_task_probability``, else buffered."""
        count = self.config.problems_per_iteration
        from_buffer = sum(self.rng.random() >= self.config.new_task_probability for _ in range(count))
        replayed = self.buffer.sample(from_buffer)
        fresh = self.task.sample(count - len(replayed), derive_seed(self.config.seed, iteration))
        return [Instance(problem) for problem in fresh] + replayed

    def step_prompt(self, instance: Instance, diverge: bool) -> str:
        if not instance.history:
            return self.prompt(instance.problem)
        return self.format.revision(instance.problem.question, instance.history[-1], DIVERGE if diverge else None)

    def quality(self, problem: Problem, text: str) -> float:
        return self.task.quality(problem, text, self.format.answer)

    def step_rewards(self, instance: Instance, texts: Sequence[str], diverge: bool) -> list[float]:
        """Quality gains over the last attempt; times ``1 + diversity_bonus * d`` on divergence steps."""
        before = self.quality(instance.problem, instance.history[-1]) if instance.history else 0.0
        gains = [self.quality(instance.problem, text) - before for text in texts]
        if not diverge:
            return gains
        return [g * (1 + self.config.diversity_bonus * d) for g, d in zip(gains, diversity_distances(texts))]

    def build_round(self, iteration: int) -> Round:
        config, k = self.config, self.config.samples_per_problem
        instances = self.instances(iteration)
        diverge = [bool(i.history) and self.rng.random() < config.divergence_probability for i in instances]
        rollouts = self.sample([self.step_prompt(i, d) for i, d in zip(instances, diverge)], seed=iteration)
        rewards = []
        for index, (instance, div) in enumerate(zip(instances, diverge)):
            texts = [r.text for r in rollouts[index * k : (index + 1) * k]]
            returns = self.step_rewards(instance, texts, div)
            rewards += returns
            score = group_variance(returns)
            if instance.history:
                self.buffer.rescore(instance, score)
            self.buffer.add(Instance(instance.problem, instance.history + (self.rng.choice(texts),), score))
        round_ = self.grpo_round([i.problem for i in instances], rollouts, rewards)
        depths = [i.depth for i in instances]
        round_.logs.update({
            "mean_depth": sum(depths) / len(depths), "max_depth": float(max(depths)),
            "replayed": sum(d > 0 for d in depths) / len(depths), "diverged": sum(diverge) / len(diverge),
            "buffer_size": float(len(self.buffer)),
        })
        return round_

    def evaluate(self) -> dict[str, float]:
        """Greedy first attempt and ``eval_revisions`` greedy revisions on the held-out problems."""
        chains = revision_chain(
            self.policy, self.tokenizer, self.format, self.eval_set, self.config.eval_revisions,
            self.config.max_new_tokens, self.config.generation_batch_size,
        )
        table = [[self.verify(p, text) for text in chain] for p, chain in zip(self.eval_set, chains)]
        metrics = flat_metrics(self_correction_metrics(table, 0, len(table[0]) - 1))
        turns = len(table[0])
        for t in range(turns):
            metrics[f"quality_t{t + 1}"] = sum(self.quality(p, c[t]) for p, c in zip(self.eval_set, chains)) / len(chains)
        return {"accuracy": metrics[f"accuracy_t{turns}"], **metrics}


def revision_chain(
    model, tokenizer, fmt, problems: Sequence[Problem], revisions: int, max_new_tokens: int = 64, batch_size: int = 256,
    temperature: float = 0.0, seed: int = 0,
) -> list[list[str]]:
    """Per problem a first attempt and ``revisions`` revisions (greedy, or sampled at ``temperature``),
    each continuing the question and the **latest** attempt only (the training context), one round of
    the shared sampler (:func:`~selfgen.train.llm.revision.sample_revisions` with ``first_attempts``) per step."""
    options = dict(temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size)
    chains = [[e.texts[0]] for e in sample_revisions(model, tokenizer, fmt, problems, rounds=1, seed=seed, **options)]
    for step in range(revisions):
        latest = [chain[-1] for chain in chains]
        episodes = sample_revisions(model, tokenizer, fmt, problems, rounds=2, first_attempts=latest, seed=seed + step + 1, **options)
        for chain, episode in zip(chains, episodes):
            chain.append(episode.texts[1])
    return chains


METHOD = Method(
    name="exit",
    summary="ExIt: GRPO on single self-improvement steps from a learnability-prioritised buffer of partial histories",
    config_class=ExItConfig,
    train=run_recipe(ExItTrainer),
)
