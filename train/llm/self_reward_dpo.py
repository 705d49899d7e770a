"""Iterative self-rewarding / self-rationalising DPO, with EVOLVE's self-refinement as an option.

Seed stage (Self-Rewarding LMs' M1, before iteration 1; ``eft_problems``/``ift_problems`` > 0): SFT
on the shared Trainer on seed data drawn from training seeds (:func:`seed_examples`):

* **EFT** (evaluation fine-tuning): LLM-as-a-judge examples, each a candidate solution, then ``J:``,
  a rationale (:func:`eft_rationale`: the candidate's answer quoted ``C:``, the problem re-derived
  step by step, the two answers compared digit by digit ``D:``, each comparison written right after
  the two digits it compares) and the verdict ``V:Y|N`` of the
  task's **verifier** (:func:`eft_example`). The candidates (``eft_candidates``) are by default the
  starting model's **own** samples on ``eft_problems`` seed problems (``"policy"``: the responses
  the judge will have to rate, as the paper's seed EFT data rates model-style responses), balanced to
  as many correct as wrong ones (:func:`balanced_candidates`); ``"corrupted"``: worked solutions,
  half of them with one answer digit changed (:func:`corrupted_candidates`). ``eft_scrambled`` adds
  that many worked solutions half of which have a scrambled answer (:func:`scrambled_answer`, about
  half the digits changed), and ``eft_mark_weight`` is the SFT loss weight of each judgement's
  decisions - the ``=``/``x`` marks and the verdict (:func:`decision_spans`). Both are departures:
  with the model's own candidates a wrong answer differs from the right one in one or two digits, so
  ``x`` is a rare token among ~100 per judgement, and the 0.86 M model learned to write ``=``
  everywhere (its ``x`` was right half the time, teacher-forced) - even though it learns the same
  comparison in isolation within 200 steps;
* **IFT** (instruction fine-tuning): ``ift_problems`` plain worked solutions, so that answering is
  kept while judging is taught.

The verifier labels the seed data only; the iterations never call it. Then each iteration:

1. the policy samples ``samples_per_problem`` candidate solutions per problem; with
   ``self_refine: true`` (EVOLVE, iterative preference optimisation with self-refinement) each
   candidate is also revised by the policy (``R:`` turn) and the revisions join the candidates;
2. the policy **judges** every candidate ``num_judgements`` times, each judgement a rationale (its own
   re-derivation of the answer) and a verdict ``V:Y|N``; a candidate's self-reward is its share of ``Y``;
3. answer pairs (self-rewarding LM, Yuan et al. 2024): for each problem the highest- vs the
   lowest-rewarded candidate, when their rewards differ;
4. judgement pairs (self-rationalisation, Trivedi et al. 2024): for each candidate whose judgements
   disagree, a rationale with the majority verdict is preferred over one with the minority verdict,
   so the judge is trained towards its own consensus; with ``labelled_judgements`` > 0 also, as in
   Trivedi et al.'s curation from the judge's labelled training set, that many seed EFT candidates
   (saved by the seed stage to ``iteration-0/eft_candidates.jsonl``) are judged ``num_judgements``
   times and a judgement whose verdict is the seed label is preferred over one whose is not
   (:meth:`SelfRewardDPOTrainer.labelled_judgement_pairs`; the labels are the seed data's, no new
   verifier call);
5. DPO (sigmoid loss) on all pairs against the policy at the start of the iteration as reference.

Evaluation: held-out accuracy and **judge agreement** with the verifier (greedy verdicts; a
judgement without a verdict counts as a disagreement) on two fixed sets of held-out candidates:
``judge_agreement`` on the starting model's own samples, balanced correct / wrong (the responses a
self-rewarding judge rates; ``judge_accepts_correct`` and ``judge_rejects_wrong`` are its two
halves), and ``judge_agreement_corrupted`` on worked solutions half of which have one corrupted
answer digit (a candidate whose answer contradicts its own correct steps).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from ...data.problems import Problem
from ...data.tasks import (
    AnswerExtractor,
    Task,
    corrupt_answer,
    extract_answer,
    judge_prompt,
    parse_verdict,
    prompt_text,
    replace_answer,
)
from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .modeling import frozen_copy
from .objectives import DPOCollator, DPOObjective, PreferencePair, SFTCollator, SFTObjective, TextPair
from .rewards import SelfJudgeReward

EFT_CANDIDATES = ("policy", "corrupted")


@dataclass
class SelfRewardDPOConfig(IterativeConfig):
    problems_per_iteration: int = 128
    samples_per_problem: int = 4
    num_judgements: int = 4
    judge_temperature: float = 1.0
    judge_max_new_tokens: int = 72
    self_refine: bool = False
    beta: float = 0.1
    learning_rate: float = 1e-4
    train_batch_size: int = 16
    eft_problems: int = 0  # seed EFT problems (0: no seed stage unless ift_problems > 0)
    eft_candidates: str = "policy"  # "policy": the starting model's own samples | "corrupted": one-digit corruptions
    eft_mark_weight: float = 1.0  # SFT loss weight of the EFT judgements' decisions (the =/x marks, the verdict)
    labelled_judgements: int = 0  # > 0: also judgement pairs on this many labelled seed EFT candidates per iteration
    eft_scrambled: int = 0  # extra EFT candidates: worked solutions with a scrambled answer (balances the x/= marks)
    ift_problems: int = 0  # seed IFT worked solutions mixed into the seed stage
    seed_train_steps: int = 200
    seed_learning_rate: float = 3e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labelled_judgements and not self.eft_problems:
            raise ValueError("labelled_judgements > 0 needs the seed stage's labelled candidates: set eft_problems > 0")
        if self.eft_candidates not in EFT_CANDIDATES:
            raise ValueError(f"eft_candidates must be one of {EFT_CANDIDATES}, got {self.eft_candidates!r}")


EFT_SEED = 8_000  # the seed stage's problems (training split)
Candidate = tuple[Problem, str, bool]  # a problem, a candidate completion, the verifier's verdict on it


def corrupted_candidates(
    task: Task, problems: list[Problem], seed: int, corrupt: Callable[[str, random.Random], str] = corrupt_answer
) -> list[Candidate]:
    """Worked solutions, every second one with its answer changed by ``corrupt`` (exactly half correct)."""
    rng = random.Random(seed)
    candidates = []
    for index, problem in enumerate(problems):
        solution = task.worked_solution(problem)
        if index % 2:
            solution = replace_answer(solution, corrupt(problem.answer, rng))
        candidates.append((problem, solution, task.verify(problem, solution)))
    return candidates


def scrambled_answer(answer: str, rng: random.Random) -> str:
    """``answer`` with each digit changed with probability 1/2 (at least one): about as many differing
    as equal digits, so the rationale's ``x`` and ``=`` marks are balanced."""
    digits = list(answer)
    positions = [index for index, char in enumerate(digits) if char.isdigit()]
    changed = [index for index in positions if rng.random() < 0.5] or [rng.choice(positions)]
    for index in changed:
        digits[index] = rng.choice([d for d in "0123456789" if d != digits[index]])
    return "".join(digits)


def balanced_candidates(
    verify: Callable[[Problem, str], bool], problems: list[Problem], completions: list[list[str]]
) -> list[Candidate]:
    """As many correct as wrong candidates (by ``verify``): per problem its first correct and first wrong
    completion (``completions[i]`` are problem i's samples), then the larger class cut to the smaller, interleaved."""
    correct, wrong = [], []
    for problem, samples in zip(problems, completions, strict=True):
        verdicts = [verify(problem, sample) for sample in samples]
        for verdict, found in ((True, correct), (False, wrong)):
            if verdict in verdicts:
                found.append((problem, samples[verdicts.index(verdict)], verdict))
    return [candidate for pair in zip(correct, wrong) for candidate in pair]


def eft_rationale(solution: str, candidate_answer: str | None) -> str:
    """The seed judge's rationale: the candidate's answer quoted first (``C:``), its own solution, then
    the two answers compared digit by digit (``D:``): per position its own digit, the candidate's digit
    (``_`` where one answer is shorter) and ``=`` when they are the same, ``x`` when not - so that each
    mark compares the two characters just before it, and the verdict is ``Y`` iff there is no ``x``."""
    own, quoted = extract_answer(solution) or "", candidate_answer or ""
    pairs = zip_longest(own, quoted, fillvalue="_")
    return f"C:{quoted}\n{solution}\nD:" + ",".join(f"{a}{b}{'=' if a == b else 'x'}" for a, b in pairs)


def decision_spans(judgement: str, weight: float) -> tuple[tuple[int, int, float], ...]:
    """``(start, end, weight)`` spans of a judgement's decisions: the ``=``/``x`` marks of its ``D:``
    line and its ``V:`` verdict."""
    start = judgement.index("\nD:") + 3
    line = judgement[start:].split("\n")[0]
    verdict = judgement.rindex("\nV:") + 3
    marks = tuple((start + index, start + index + 1, weight) for index in range(2, len(line), 4))
    return marks + ((verdict, verdict + 1, weight),)


def eft_example(
    task: Task,
    candidate: Candidate,
    mark_weight: float = 1.0,
    prompt: Callable[[str], str] = prompt_text,
    extract: AnswerExtractor = extract_answer,
) -> TextPair:
    """One EFT judge example: the candidate after its problem's ``prompt``, ``J:``, the rationale, the
    verifier's verdict; with ``mark_weight`` != 1 the comparison marks and the verdict get that SFT loss
    weight. ``extract`` reads the candidate's answer (the prompt format's)."""
    problem, completion, verdict = candidate
    rationale = eft_rationale(task.worked_solution(problem), extract(completion))
    judgement = f"{rationale}\nV:{'Y' if verdict else 'N'}"
    spans = decision_spans(judgement, mark_weight) if mark_weight != 1.0 else ()
    return TextPair(judge_prompt(prompt(problem.question), completion), judgement, spans)


def seed_examples(
    task: Task,
    candidates: list[Candidate],
    ift_problems: int,
    seed: int = 0,
    mark_weight: float = 1.0,
    prompt: Callable[[str], str] = prompt_text,
    extract: AnswerExtractor = extract_answer,
) -> list[TextPair]:
    """Seed EFT judge examples on ``candidates`` + ``ift_problems`` IFT worked solutions, shuffled."""
    examples = [eft_example(task, candidate, mark_weight, prompt, extract) for candidate in candidates]
    for problem in task.sample(ift_problems, EFT_SEED + 500 + seed):
        examples.append(TextPair(prompt(problem.question), task.worked_solution(problem)))
    random.Random(seed).shuffle(examples)
    return examples


class SelfRewardDPOTrainer(IterativeTrainer):
    config_class = SelfRewardDPOConfig
    uses_reward_fn = False  # the reward is the model's own judgement
    plot_keys = ("accuracy", "judge_agreement", "judge_agreement_corrupted", "answer_pairs", "judgement_pairs")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.judge_sets = {
            "": self.policy_candidates(self.eval_set, seed=EFT_SEED),
            "_corrupted": corrupted_candidates(self.task, self.eval_set, self.config.seed),
        }

    def policy_candidates(self, problems: list[Problem], seed: int) -> list[Candidate]:
        """The current policy's own samples on ``problems`` (temperature ``config.temperature``), balanced."""
        k = self.config.samples_per_problem
        texts = [r.text for r in self.solve(problems, seed=seed)]
        return balanced_candidates(self.verify, problems, [texts[i * k : (i + 1) * k] for i in range(len(problems))])

    def judge(self, num_judgements: int, temperature: float) -> SelfJudgeReward:
        config = self.config
        return SelfJudgeReward(
            self.policy, self.tokenizer, num_judgements, temperature, config.judge_max_new_tokens, self.format.prompt
        )

    def judge_agreement(self, candidates: list[Candidate]) -> list[bool]:
        """Per candidate: whether the greedy self-judgement's verdict is the verifier's."""
        judgements = self.judge(1, 0.0).judgements([p for p, _, _ in candidates], [c for _, c, _ in candidates])
        return [parse_verdict(j.text) == truth for j, (_, _, truth) in zip(judgements, candidates)]

    def evaluate(self) -> dict[str, float]:
        metrics = super().evaluate()
        for suffix, candidates in self.judge_sets.items():
            if candidates:
                agreed = self.judge_agreement(candidates)
                metrics[f"judge_agreement{suffix}"] = sum(agreed) / len(agreed)
                if not suffix:  # the balanced own-sample set interleaves correct, wrong, correct, ...
                    metrics["judge_accepts_correct"] = sum(agreed[0::2]) / len(agreed[0::2])
                    metrics["judge_rejects_wrong"] = sum(agreed[1::2]) / len(agreed[1::2])
        return metrics

    def seed_round(self) -> Round | None:
        config = self.config
        if not (config.eft_problems or config.ift_problems):
            return None
        problems = self.task.sample(config.eft_problems, EFT_SEED + config.seed)
        if config.eft_candidates == "policy":
            candidates = self.policy_candidates(problems, seed=EFT_SEED + config.seed)
        else:
            candidates = corrupted_candidates(self.task, problems, config.seed)
        if config.eft_scrambled:
            scrambled = self.task.sample(config.eft_scrambled, EFT_SEED + 700 + config.seed)
            candidates = candidates + corrupted_candidates(self.task, scrambled, config.seed, scrambled_answer)
        self.save_seed_candidates(candidates)
        examples = seed_examples(
            self.task, candidates, config.ift_problems, config.seed, config.eft_mark_weight, self.format.prompt,
            self.format.answer,
        )
        logs = {"eft_examples": float(len(candidates)), "ift_examples": float(config.ift_problems)}
        return Round(
            SFTObjective(), examples, SFTCollator(self.tokenizer, config.max_length), logs,
            max_train_steps=config.seed_train_steps, learning_rate=config.seed_learning_rate,
        )

    def candidates(self, problems: list[Problem], iteration: int) -> list[tuple[Problem, str]]:
        if not self.config.self_refine:
            return [(problems[r.prompt_index], r.text) for r in self.solve(problems, seed=iteration)]
        episodes = self.revisions(problems, rounds=2, seed=iteration, verify=False)  # attempt, its plain revision (R:)
        return [(e.problem, e.texts[0]) for e in episodes] + [(e.problem, e.texts[1]) for e in episodes]

    def build_round(self, iteration: int) -> Round:
        config = self.config
        problems = self.problems(iteration)
        candidates = self.candidates(problems, iteration)
        judge = self.judge(config.num_judgements, config.judge_temperature)
        judgements = judge.judgements([p for p, _ in candidates], [c for _, c in candidates], seed=iteration)
        k = config.num_judgements
        by_problem: dict[str, list[tuple[float, str]]] = {}
        judgement_pairs = []
        for index, (problem, candidate) in enumerate(candidates):
            own = judgements[index * k : (index + 1) * k]
            verdicts = [parse_verdict(j.text) for j in own]
            by_problem.setdefault(problem.id, []).append((sum(v is True for v in verdicts) / k, candidate))
            judgement_pairs += self.judgement_pair(problem, candidate, [j.text for j in own], verdicts, prompt=self.format.prompt)
        answer_pairs = []
        for problem in problems:
            scored = sorted(by_problem.get(problem.id, []), key=lambda item: item[0])
            if scored and scored[-1][0] > scored[0][0]:
                answer_pairs.append(PreferencePair(self.prompt(problem), scored[-1][1], scored[0][1]))
        labelled = self.labelled_judgement_pairs(iteration) if config.labelled_judgements else []
        pairs = answer_pairs + judgement_pairs + labelled
        logs = {
            "answer_pairs": float(len(answer_pairs)), "judgement_pairs": float(len(judgement_pairs)),
            "labelled_judgement_pairs": float(len(labelled)),
        }
        objective = DPOObjective(frozen_copy(self.policy), beta=config.beta)
        return Round(objective, pairs, DPOCollator(self.tokenizer, config.max_length), logs)

    @property
    def seed_candidates_path(self) -> Path:
        return self.iteration_dir(0) / "eft_candidates.jsonl"

    def save_seed_candidates(self, candidates: list[Candidate]) -> None:
        """The labelled seed EFT candidates, kept for the labelled judgement pairs (and a resumed run)."""
        self.seed_candidates_path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps({"question": p.question, "answer": p.answer, "id": p.id, "candidate": c, "label": label})
            for p, c, label in candidates
        ]
        partial = self.seed_candidates_path.with_suffix(".jsonl.tmp")
        partial.write_text("\n".join(lines) + "\n")
        partial.replace(self.seed_candidates_path)  # atomic: a resumed run never reads half a file

    def load_seed_candidates(self) -> list[Candidate]:
        if not self.seed_candidates_path.is_file():
            raise FileNotFoundError(
                f"{self.seed_candidates_path}: labelled_judgements needs the seed stage's candidates"
            )
        rows = [json.loads(line) for line in self.seed_candidates_path.read_text().splitlines() if line]
        return [(Problem(r["question"], r["answer"], r["id"]), r["candidate"], r["label"]) for r in rows]

    def labelled_judgement_pairs(self, iteration: int) -> list[PreferencePair]:
        """Self-rationalisation on the labelled seed set (Trivedi et al.): ``labelled_judgements`` seed
        EFT candidates, each judged ``num_judgements`` times; a judgement whose verdict is the candidate's
        seed label is preferred over one whose verdict is not."""
        config = self.config
        seed_candidates = self.load_seed_candidates()
        count = min(config.labelled_judgements, len(seed_candidates))
        chosen = random.Random(config.seed + iteration).sample(seed_candidates, count)
        judge = self.judge(config.num_judgements, config.judge_temperature)
        judgements = judge.judgements([p for p, _, _ in chosen], [c for _, c, _ in chosen], seed=iteration)
        k, pairs = config.num_judgements, []
        for index, (problem, candidate, label) in enumerate(chosen):
            texts = [j.text for j in judgements[index * k : (index + 1) * k]]
            pairs += self.judgement_pair(
                problem, candidate, texts, [parse_verdict(t) for t in texts], label, prompt=self.format.prompt
            )
        return pairs

    @staticmethod
    def judgement_pair(
        problem: Problem,
        candidate: str,
        texts: list[str],
        verdicts: list[bool | None],
        preferred: bool | None = None,
        prompt: Callable[[str], str] = prompt_text,
    ) -> list[PreferencePair]:
        """A rationale whose verdict is ``preferred`` over one with the other verdict; ``preferred=None``:
        the majority verdict (none when the judgements agree or tie)."""
        counts = Counter(v for v in verdicts if v is not None)
        if len(counts) < 2 or (preferred is None and counts[True] == counts[False]):
            return []
        preferred = counts.most_common(1)[0][0] if preferred is None else preferred
        chosen = next(t for t, v in zip(texts, verdicts) if v == preferred)
        rejected = next(t for t, v in zip(texts, verdicts) if v is not None and v != preferred)
        return [PreferencePair(judge_prompt(prompt(problem.question), candidate), chosen, rejected)]


METHOD = Method(
    name="self_reward_dpo",
    summary="self-rewarding / self-rationalising DPO: the LM judges its own answers, pairs them, DPO (EVOLVE option)",
    config_class=SelfRewardDPOConfig,
    train=run_recipe(SelfRewardDPOTrainer),
)
