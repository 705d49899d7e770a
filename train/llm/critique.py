"""Critique-in-the-loop (Xi et al., 2024, "Enhancing LLM Reasoning via Critique Models with Test-Time
and Training-Time Supervision"; official code WooooDyy/MathCritique).

Two players: an **actor** ``pi_theta`` solves, a **critique model** ``pi_phi`` reads a solution and
writes step-level feedback; the actor then refines its solution with that feedback in context.
Here the critique is the compact feedback line of :mod:`selfgen.data.reasoning`: ``Y`` (correct) or
``N<k>`` (wrong, the first wrong step is ``k``), written after ``fmt.feedback_request(question,
attempt)``; the refinement is ``fmt.revision(question, attempt, feedback)`` continued by the actor.

**Test time** (:func:`critique_refine`, any causal LM pair): the actor samples ``N`` solutions; the
critic judges each (greedy); every solution it calls wrong is refined once by the actor under its
critique; the final answer is the majority vote over the ``N`` (refined where refined) solutions -
the paper's "critique-refine @N" against "majority vote @N" over the unrefined samples. As in the
paper's test setting, whether to refine is the critic's call; the ground truth is never read.

**Training time** (:class:`CritiqueTrainer`, critique-in-the-loop self-improvement). Each iteration:

1. *exploration* - the actor samples ``samples_per_problem`` solutions per training problem;
2. *critique and refinement* - every sample the verifier marks wrong is critiqued by the critic and
   refined by the actor under that critique (``refine_samples`` refinements each), as the official
   code does at training time (wrong samples are found with the reference answer);
3. *selection* - correct samples and correct refinements, at most ``max_per_problem`` distinct
   solutions per problem, become SFT examples with the plain prompt (the refinement stored as if
   written unaided, the paper's data filter); with ``train_refinement`` the refinement turn itself
   (wrong attempt + critique -> correct refinement) is kept too (the official
   ``use_selfimprove_feedback``);
4. *update* - the **base** model is fine-tuned on these plus the seed data (the official script
   restarts from the base model each iteration with the iteration-0 data included).

``use_critic: false`` is the matched control, the paper's vanilla self-improvement: the same seed
actor, problems and selection, exploration by sampling only (ReST-EM's E-step/M-step); give it
``samples_per_problem`` equal to the critique run's actor generations per problem (logged as
``actor_generations``) to compare at equal budget.

**Seed round** (iteration 0). The paper's critic is a separate model fine-tuned on MathCritique-76k
(critiques written by GPT-4o and checked), and its actor's iteration-0 SFT data includes GPT-4
refinements under critique. Departures, both because no stronger model exists here: (a) the critic is
trained **here**, a copy of the base model fine-tuned (SFT) on the actor's own samples of
``seed_problems`` training problems, labelled by the rule-based step verifier
(:func:`~selfgen.data.reasoning.step_feedback`: the first step that differs from the reference
column steps); it is then frozen, as in the official script's default (no critic re-training);
(b) the actor's seed data are its own correct samples plus refinement examples built from its own
samples: a wrong sample, its step-verifier critique, and a correct sample of the same problem as
the refinement (no reference solution is used). Problems are fresh seeded draws each iteration.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from ...data.problems import Problem
from ...data.reasoning import Feedback, step_feedback
from ...data.tasks import derive_seed
from ..registry import Method
from ..trainer import Trainer
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .modeling import disable_dropout, tokenizer_exporter
from .objectives import SFTCollator, SFTObjective, TextPair
from .prompts import PromptFormat, prepare_tokenizer
from .rewards import answer_key, majority_answer
from .revision import CriticFeedback, sample_revisions

SEED_SEED = 7_700  # the seed round's problems (training split)
CRITIC_MAX_NEW_TOKENS = 6  # a feedback line: "Y" or "N<k>" and eos


# ----------------------------------------------------------------- test time


@dataclass
class CritiqueRefineResult:
    """Per problem: the ``N`` attempts, the critic's feedback on each (``None``: unparsable), and the
    final solutions (an attempt, or its refinement where the critic called it wrong)."""

    attempts: list[list[str]]
    feedback: list[list[Feedback | None]]
    finals: list[list[str]]

    @property
    def refined(self) -> list[list[bool]]:
        return [[needs_refinement(f) for f in row] for row in self.feedback]


def needs_refinement(feedback: Feedback | None) -> bool:
    """The critic called the attempt wrong (an unreadable critique refines nothing)."""
    return feedback is not None and not feedback.correct


def majority_vote(texts: Sequence[str], fmt: PromptFormat) -> str | None:
    """The most common canonical final answer among ``texts`` (``None`` when none has one)."""
    return majority_answer([answer_key(text, fmt.answer) for text in texts])


def critic_feedback(critic: nn.Module, tokenizer, fmt: PromptFormat, batch_size: int = 256) -> CriticFeedback:
    """The critic as a feedback function ``(problems, attempts) -> [Feedback | None]``: its greedy
    ``F:`` line after ``fmt.feedback_request`` (:class:`~selfgen.train.llm.revision.CriticFeedback`)."""
    return CriticFeedback(critic, tokenizer, fmt, CRITIC_MAX_NEW_TOKENS, batch_size)


def critique_refine(
    actor: nn.Module,
    critic: nn.Module,
    tokenizer,
    problems: Sequence[Problem],
    *,
    prompt_format: PromptFormat | None = None,
    num_samples: int = 8,
    temperature: float = 1.0,
    refine_temperature: float = 0.0,
    max_new_tokens: int = 64,
    batch_size: int = 256,
    critic_tokenizer=None,
    seed: int = 0,
) -> CritiqueRefineResult:
    """Critique-refine @N on any causal LM pair: ``num_samples`` actor attempts per problem at
    ``temperature``, the critic's step-level feedback on each, one refinement (at
    ``refine_temperature``, greedy by default) of every attempt the critic calls wrong, continued
    from the attempt and the critique by the shared sampler
    (:func:`~selfgen.train.llm.revision.sample_revisions`). Vote over ``result.finals`` with
    :func:`majority_vote` (majority @N: over ``result.attempts``)."""
    fmt = prompt_format or PromptFormat()
    tokenizer = prepare_tokenizer(tokenizer)
    critic_tokenizer = prepare_tokenizer(critic_tokenizer) if critic_tokenizer is not None else tokenizer
    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size)
    first = sample_revisions(actor, tokenizer, fmt, problems, rounds=1, temperature=temperature, num_samples=num_samples, seed=seed, **options)
    owners, attempts = [e.problem for e in first], [e.texts[0] for e in first]
    notes = critic_feedback(critic, critic_tokenizer, fmt, batch_size)(owners, attempts)
    wrong = [i for i, note in enumerate(notes) if needs_refinement(note)]
    finals = list(attempts)
    if wrong:
        given = {(owners[i].question, attempts[i]): notes[i] for i in wrong}
        episodes = sample_revisions(
            actor, tokenizer, fmt, [owners[i] for i in wrong], rounds=2, first_attempts=[attempts[i] for i in wrong],
            feedback=lambda ps, texts: [given[(p.question, t)] for p, t in zip(ps, texts)],
            temperature=refine_temperature, seed=seed + 1, **options,
        )
        for index, episode in zip(wrong, episodes):
            finals[index] = episode.texts[1]
    rows = lambda flat: [flat[i * num_samples : (i + 1) * num_samples] for i in range(len(problems))]  # noqa: E731
    return CritiqueRefineResult(rows(attempts), rows(notes), rows(finals))


# ----------------------------------------------------------------- training data


def critic_examples(task, fmt: PromptFormat, problems: Sequence[Problem], attempts: Sequence[str]) -> list[TextPair]:
    """The critic's SFT data: ``feedback_request(question, attempt) -> Y | N<k>``, labelled by the
    rule-based step verifier (:func:`~selfgen.data.reasoning.step_feedback`)."""
    return [
        TextPair(fmt.feedback_request(p.question, a), step_feedback(task, p, a, fmt.answer).line())
        for p, a in zip(problems, attempts, strict=True)
    ]


def refinement_examples(
    fmt: PromptFormat, problem: Problem, attempts: Sequence[str], correct: Sequence[bool], feedback: Sequence[Feedback]
) -> list[TextPair]:
    """Refinement-turn examples from one problem's own samples: each wrong attempt under its critique
    followed by a correct sample of the same problem (cycled); none when no sample is correct."""
    right = [a for a, ok in zip(attempts, correct) if ok]
    wrong = [(a, f) for a, ok, f in zip(attempts, correct, feedback) if not ok]
    return [TextPair(fmt.revision(problem.question, a, f), right[i % len(right)]) for i, (a, f) in enumerate(wrong)] if right else []


def distinct_correct(texts: Sequence[str], correct: Sequence[bool]) -> list[str]:
    """The distinct correct texts, in order of first appearance."""
    return list(dict.fromkeys(t for t, ok in zip(texts, correct) if ok))


# ----------------------------------------------------------------- the recipe


@dataclass
class CritiqueConfig(IterativeConfig):
    task: str = "add_hard"
    samples_per_problem: int = 4  # exploration samples per problem (N)
    refine_samples: int = 1  # refinements of each wrong sample under its critique
    use_critic: bool = True  # False: the matched control (vanilla self-improvement = ReST-EM's loop)
    max_per_problem: int = 4  # distinct correct solutions kept per problem
    train_refinement: bool = True  # keep the refinement turn (wrong + critique -> right) as SFT data too
    refine_temperature: float = 1.0  # refinement sampling at training time
    seed_problems: int = 1000  # the seed round: critic data and the actor's seed data from own samples
    seed_samples: int = 4
    critic_train_steps: int = 300
    critic_learning_rate: float = 3e-4
    seed_train_steps: int = 300
    seed_learning_rate: float = 3e-4
    eval_samples: int = 0  # > 0: evaluate() also reports majority@N and critique-refine@N (N = eval_samples)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("refine_samples", "max_per_problem", "seed_problems", "seed_samples")


class CritiqueTrainer(IterativeTrainer):
    """Critique-in-the-loop self-improvement; ``self.critic`` is the frozen critique model after the seed round."""

    config_class = CritiqueConfig
    uses_reward_fn = False
    plot_keys = ("accuracy", "accuracy_refined", "problems_solved", "distinct_correct_per_problem")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.critic: nn.Module | None = None
        self.seed_examples: list[TextPair] = []

    @property
    def critic_dir(self) -> Path:
        return self.output_dir / "critic"

    def seed_round(self) -> Round:
        """Train the critic on the actor's own labelled samples (saved to ``output_dir/critic``), then
        return the actor's seed SFT round (own correct samples + refinement examples)."""
        config, k = self.config, self.config.seed_samples
        problems = self.task.sample(config.seed_problems, derive_seed(config.seed, SEED_SEED))
        texts = [r.text for r in self.solve(problems, num_samples=k, seed=SEED_SEED)]
        repeated = [p for p in problems for _ in range(k)]
        correct = [self.verify(p, t) for p, t in zip(repeated, texts)]
        labels = critic_examples(self.task, self.format, repeated, texts)
        self.critic = self.train_critic(labels)
        examples = []
        for i, problem in enumerate(problems):
            group, ok = texts[i * k : (i + 1) * k], correct[i * k : (i + 1) * k]
            feedback = [step_feedback(self.task, problem, t, self.format.answer) for t in group]
            examples += [TextPair(self.prompt(problem), t) for t in distinct_correct(group, ok)]
            examples += refinement_examples(self.format, problem, group, ok, feedback)
        self.seed_examples = examples
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.seed_path, "w") as handle:
            handle.writelines(json.dumps([e.prompt, e.completion]) + "\n" for e in examples)
        logs = {"seed_examples": float(len(examples)), "seed_accuracy": sum(correct) / len(correct), "critic_examples": float(len(labels))}
        collator = SFTCollator(self.tokenizer, config.max_length)
        return Round(
            SFTObjective(), examples, collator, logs, from_base=True,
            max_train_steps=config.seed_train_steps, learning_rate=config.seed_learning_rate,
        )

    def train_critic(self, examples: list[TextPair]) -> nn.Module:
        """SFT of a copy of the base model on ``examples``; returns it frozen (eval mode, no grad)."""
        config = self.config
        run = replace(
            config, output_dir=str(self.critic_dir), export_dir=str(self.critic_dir / "model"), resume_from=None,
            max_train_steps=config.critic_train_steps, learning_rate=config.critic_learning_rate,
            train_batch_size=min(config.train_batch_size, len(examples)),
        )
        model = self.fresh_base()
        if config.disable_dropout:
            disable_dropout(model)
        trainer = Trainer(
            model.train(), SFTObjective(), examples, run,
            export_fn=tokenizer_exporter(self.tokenizer), collate_fn=SFTCollator(self.tokenizer, config.max_length),
        )
        trainer.train()
        return trainer.unwrapped_model.eval().requires_grad_(False)

    @property
    def seed_path(self) -> Path:
        return self.output_dir / "seed_examples.jsonl"

    def _resume(self):
        history, done = super()._resume()
        if history and (self.critic_dir / "model" / "config.json").is_file():
            self.critic = self.load_model(self.critic_dir / "model")[0].eval().requires_grad_(False)
            lines = self.seed_path.read_text().splitlines() if self.seed_path.is_file() else []
            self.seed_examples = [TextPair(*json.loads(line)) for line in lines]
        return history, done

    def build_round(self, iteration: int) -> Round:
        config, k = self.config, self.config.samples_per_problem
        if config.use_critic and self.critic is None:
            raise ValueError("use_critic=True needs the critic of the seed round (output_dir/critic/model)")
        problems = self.problems(iteration)
        texts = [r.text for r in self.solve(problems, seed=iteration)]
        repeated = [p for p in problems for _ in range(k)]
        correct = [self.verify(p, t) for p, t in zip(repeated, texts)]
        refinements: dict[int, list[tuple[str, Feedback | None, bool, str]]] = {i: [] for i in range(len(problems))}
        generations = len(texts)
        logs: dict[str, float] = {}
        if config.use_critic:
            wrong = [i for i, ok in enumerate(correct) if not ok for _ in range(config.refine_samples)]
            critic = critic_feedback(self.critic, self.tokenizer, self.format, config.generation_batch_size)
            episodes = self.revisions(
                [repeated[i] for i in wrong], rounds=2, feedback=critic, first_attempts=[texts[i] for i in wrong],
                num_samples=1, temperature=config.refine_temperature, seed=derive_seed(config.seed, iteration, "refine"),
            ) if wrong else []
            generations += len(episodes)
            for index, episode in zip(wrong, episodes):
                first, second = episode.turns
                refinements[index // k].append((texts[index], first.feedback, bool(second.correct), second.rollout.text))
            notes = [e.turns[0].feedback for e in episodes]
            truth = [step_feedback(self.task, repeated[i], texts[i], self.format.answer) for i in wrong]
            logs["critic_says_wrong"] = sum(needs_refinement(f) for f in notes) / max(len(notes), 1)
            logs["critic_step_agreement"] = sum(f == t for f, t in zip(notes, truth)) / max(len(notes), 1)
            logs["refinements_correct"] = sum(bool(e.turns[1].correct) for e in episodes) / max(len(episodes), 1)
        rng = random.Random(derive_seed(config.seed, iteration, "select"))
        examples, solved, distinct = [], 0, 0
        for i, problem in enumerate(problems):
            group, ok = texts[i * k : (i + 1) * k], correct[i * k : (i + 1) * k]
            found = distinct_correct(group + [t for *_, t in refinements[i]], ok + [good for _, _, good, _ in refinements[i]])
            solved, distinct = solved + bool(found), distinct + len(found)
            rng.shuffle(found)
            examples += [TextPair(self.prompt(problem), t) for t in found[: config.max_per_problem]]
            if config.train_refinement:
                examples += [TextPair(self.format.revision(problem.question, a, f), t) for a, f, good, t in refinements[i] if good]
        logs.update({
            "e_step_accuracy": sum(correct) / len(correct), "problems_solved": solved / len(problems),
            "distinct_correct_per_problem": distinct / len(problems), "actor_generations": generations / len(problems),
        })
        collator = SFTCollator(self.tokenizer, self.config.max_length)
        return Round(SFTObjective(), self.seed_examples + examples, collator, logs, from_base=True)

    def evaluate(self) -> dict[str, float]:
        """Greedy held-out accuracy, and (with a critic) the greedy attempt refined under critique
        (``accuracy_refined``); with ``eval_samples`` N, majority@N and critique-refine@N too."""
        metrics = super().evaluate()
        if self.critic is None:
            return metrics
        config = self.config
        greedy = critique_refine(
            self.policy, self.critic, self.tokenizer, self.eval_set, prompt_format=self.format, num_samples=1,
            temperature=0.0, max_new_tokens=config.max_new_tokens, batch_size=config.generation_batch_size,
        )
        metrics["accuracy_refined"] = self._vote_accuracy(greedy.finals)
        if config.eval_samples:
            sampled = critique_refine(
                self.policy, self.critic, self.tokenizer, self.eval_set, prompt_format=self.format,
                num_samples=config.eval_samples, temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                batch_size=config.generation_batch_size, seed=derive_seed(config.seed, "eval"),
            )
            metrics["majority_at_n"] = self._vote_accuracy(sampled.attempts)
            metrics["critique_refine_at_n"] = self._vote_accuracy(sampled.finals)
        return metrics

    def _vote_accuracy(self, rows: list[list[str]]) -> float:
        """The share of held-out problems whose majority answer the verifier accepts."""
        return sum(self.voted_correct(p, row) for p, row in zip(self.eval_set, rows)) / len(rows)

    def voted_correct(self, problem: Problem, texts: Sequence[str]) -> bool:
        """Whether the majority answer of ``texts`` is right (judged on a text that gives it)."""
        winner = majority_vote(texts, self.format)
        chosen = next((t for t in texts if answer_key(t, self.format.answer) == winner), None)
        return winner is not None and self.verify(problem, chosen)


METHOD = Method(
    name="critique",
    summary="Critique-in-the-loop: a step-level critic; failed samples refined under critique join rejection-sampling SFT",
    config_class=CritiqueConfig,
    train=run_recipe(CritiqueTrainer),
)
