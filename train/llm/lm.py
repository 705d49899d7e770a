"""``selfgen train lm``: pretrain the tiny causal LM of ``assets/lm-arith`` on a seed set of worked examples.

The seed set mixes the tasks of :mod:`selfgen.data.tasks` (column addition, multiplication by a
digit, countdown) in the formats the recipes prompt with:

* plain: ``Q:<question>\\n`` -> ``S:<steps>\\nA:<answer>`` (most examples);
* hinted: ``Q:..\\nH:<answer>\\n`` -> the same solution (what STaR's rationalisation prompts with);
* revision: a correct first attempt, ``R:``, the same solution again (a base model that only restates,
  the starting point SCoRe must teach to correct);
* judge: a correct or one-digit-corrupted solution, ``J:``, the judge's own solution and ``V:Y|N``;
* rephrase: an exact rephrasing of the problem (:meth:`~selfgen.data.tasks.Task.rephrase`: addition
  operands swapped or zero-padded, multiplicand padded, countdown numbers reordered) -> its worked
  solution, so Co-Reward's rephrased questions are in distribution.

Every problem is drawn from the task's *training* split (:func:`train_problem`): no held-out
problem, nor a rephrasing of one, ever reaches the pretraining stream.

**Length curriculum.** ``curriculum: [[max_digits, steps], ...]`` pretrains in stages, stage ``k``
on fresh problems whose operands have 1..``max_digits`` digits (multiplication one digit fewer), for
``steps`` optimizer updates, each stage continuing the previous one's weights (the learning rate
restarts its warm-up and schedule in each stage). ``next_length_share`` of the addition examples of
a stage are one digit longer than its ``max_digits`` (a glimpse of the next length, so that length is
low but not zero). A stage may name a third number, ``[max_digits, steps, min_digits]``: its
operands then have ``min_digits``..``max_digits`` digits (more of the target length per step; the
continued pretraining of ``configs/lm_arith_llama_v2.yaml``). Empty ``curriculum``: one stage of
``max_digits`` for ``max_train_steps``.

**Packing.** ``pack_length: N`` (0: off, one example per row) lays consecutive examples end to end in
rows of at most ``N`` tokens (:func:`~selfgen.train.llm.objectives.pack_pairs`: eos between them, plain
causal attention across them, as HF's ``group_texts`` and nanoGPT), so positions far past one example's
~60 tokens are trained too - what a real LM's pretraining on long packed documents gives it and what
SCoRe's turn 2 (a second attempt after the first, at positions 70-140) needs. Departure from
``group_texts``: an example that does not fit starts the next row instead of being cut at the row's
edge, so every example keeps its prompt and each row starts at an example's start. ``train_batch_size``
then counts rows, not examples.

The loss is the SFT loss on the completion tokens (of every example of a packed row). The same module's ``evaluate`` and ``demo``
measure greedy accuracy on held-out problems.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from accelerate.utils import set_seed

from ...data.tasks import (
    ArithmeticTask,
    CountdownTask,
    Task,
    corrupt_answer,
    derive_seed,
    extract_answer,
    get_task,
    judge_completion,
    judge_prompt,
    prompt_text,
    replace_answer,
    revision_prompt,
)
from ...data.problems import Problem
from ..config import TrainingConfig
from ..registry import Method
from ..trainer import TrainResult, Trainer
from .modeling import build_char_tokenizer, build_tiny_llama, load_policy, tokenizer_exporter
from .objectives import PackedSequence, SFTCollator, SFTObjective, TextPair, encode_pair, pack_pairs, packed_batch
from .rollout import greedy_completions

EVAL_SEED = 10_000  # the seed of held-out draws (from the task's eval split, which no training draw reaches)


@dataclass
class LMConfig(TrainingConfig):
    num_seed_examples: int = 6000
    task_weights: dict[str, float] = field(default_factory=lambda: {"add": 0.6, "mul": 0.2, "countdown": 0.2})
    max_digits: int = 4
    format_weights: dict[str, float] = field(
        default_factory=lambda: {"plain": 0.55, "hint": 0.15, "revision": 0.15, "judge": 0.15}
    )
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 384
    max_length: int = 192
    curriculum: list[list[int]] = field(default_factory=list)  # [[max_digits, steps(, min_digits)], ...]; empty: one stage
    next_length_share: float = 0.0  # share of a stage's additions with max_digits + 1 digits
    pack_length: int = 0  # > 0: pack consecutive examples into rows of at most this many tokens

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.format_weights) - set(SEED_FORMATS)
        if unknown:
            raise ValueError(f"format_weights has unknown formats {sorted(unknown)}; expected keys of {SEED_FORMATS}")
        for stage in self.curriculum:
            shape_ok = len(stage) in (2, 3) and int(stage[0]) >= 2 and int(stage[1]) >= 1
            if not shape_ok or (len(stage) == 3 and not 1 <= int(stage[2]) <= int(stage[0])):
                raise ValueError(
                    f"curriculum stages must be [max_digits >= 2, steps >= 1] or [max_digits, steps, 1 <= min_digits <= max_digits], got {stage!r}"
                )
        if self.pack_length and self.pack_length < self.max_length:
            raise ValueError(f"pack_length ({self.pack_length}) must be 0 or >= max_length ({self.max_length})")
        if not 0.0 <= self.next_length_share < 1.0:
            raise ValueError(f"next_length_share must be in [0, 1), got {self.next_length_share}")

    def stages(self) -> list[tuple[int, int]]:
        """``(max_digits, steps)`` of each pretraining stage."""
        if not self.curriculum:
            return [(self.max_digits, self.max_train_steps)]
        return [(int(stage[0]), int(stage[1])) for stage in self.curriculum]

    def stage_min_digits(self) -> list[int]:
        """The smallest operand length of each stage (1 unless the stage names a third number)."""
        if not self.curriculum:
            return [1]
        return [int(stage[2]) if len(stage) == 3 else 1 for stage in self.curriculum]


def seed_tasks(max_digits: int, min_digits: int = 1) -> dict[str, Task]:
    return {
        "add": ArithmeticTask("add", min_digits, max_digits),
        "mul": ArithmeticTask("mul", min(min_digits, max_digits - 1), max_digits - 1),
        "countdown": CountdownTask(num_numbers=3),
    }


def train_problem(task: Task, rng: random.Random, problem_id: str) -> Problem:
    """A fresh problem of ``task``'s training split (draws that fall in the held-out split are skipped)."""
    while True:
        problem = task.make_problem(rng, problem_id)
        if task.split_of(problem) == "train":
            return problem


def seed_example(task: Task, kind: str, rng: random.Random, problem_id: str) -> TextPair:
    """One pretraining example of format ``kind`` for a fresh training-split problem of ``task``."""
    problem = train_problem(task, rng, problem_id)
    if kind == "rephrase":
        problem = task.rephrase(problem, rng)  # a rephrasing lies in its original's split
    solution = task.worked_solution(problem)
    prompt = prompt_text(problem.question)
    if kind == "hint":
        return TextPair(prompt_text(problem.question, hint=problem.answer), solution)
    if kind == "revision":
        return TextPair(revision_prompt(prompt, solution), solution)
    if kind == "judge":
        candidate = solution if rng.random() < 0.5 else replace_answer(solution, corrupt_answer(problem.answer, rng))
        verdict = judge_completion(solution, extract_answer(candidate), problem.answer)
        return TextPair(judge_prompt(prompt, candidate), verdict)
    return TextPair(prompt, solution)


SEED_FORMATS = ("plain", "hint", "revision", "judge", "rephrase")


def seed_examples(
    config: LMConfig, max_digits: int | None = None, stage: int = 0, min_digits: int = 1
) -> list[TextPair]:
    """The ``config.num_seed_examples`` seeded pretraining examples of one stage (formats and tasks
    drawn with ``config.*_weights``; operands of ``min_digits`` up to ``max_digits`` digits, default
    ``config.max_digits``). The stage's examples depend on ``(seed, stage)`` only, so a shorter last
    stage trains on the same data in the same order."""
    max_digits = config.max_digits if max_digits is None else max_digits
    rng = random.Random(derive_seed(config.seed, "lm-stage", stage) if stage else config.seed)
    tasks = seed_tasks(max_digits, min_digits)
    unknown = set(config.task_weights) - set(tasks)
    if unknown:
        raise ValueError(f"task_weights has unknown tasks {sorted(unknown)}; expected keys of {sorted(tasks)}")
    longer = ArithmeticTask("add", max_digits + 1, max_digits + 1)
    names, weights = zip(*config.task_weights.items())
    kinds, kind_weights = zip(*config.format_weights.items())
    examples = []
    for index in range(config.num_seed_examples):
        task = tasks[rng.choices(names, weights)[0]]
        if task.name == "add" and config.next_length_share and rng.random() < config.next_length_share:
            task = longer
        examples.append(seed_example(task, rng.choices(kinds, kind_weights)[0], rng, f"seed-{stage}-{index}"))
    return examples


def training_rows(config: LMConfig, tokenizer, examples: list[TextPair]) -> tuple[list, Callable]:
    """The rows a stage trains on and their collate function: the examples themselves, or with
    ``config.pack_length`` the :class:`PackedSequence` s that hold them in order."""
    if not config.pack_length:
        return examples, SFTCollator(tokenizer, config.max_length)
    encoded = [encode_pair(tokenizer, pair.prompt, pair.completion, config.max_length) for pair in examples]
    rows: list[PackedSequence] = pack_pairs(encoded, config.pack_length)
    return rows, partial(packed_batch, pad_token_id=tokenizer.pad_token_id)


def train(config: LMConfig) -> TrainResult:
    """Pretrain through :meth:`LMConfig.stages`; each stage's run is under ``output_dir/stage-k``
    (one stage: ``output_dir`` itself), the last stage exports to ``config.pipeline_dir``. With
    ``pretrained`` (a saved LM folder) the stages continue that model instead of a fresh one (its size
    and tokenizer; ``hidden_size`` etc. are then ignored)."""
    set_seed(config.seed)
    if config.pretrained:  # continued pretraining of a saved LM (its own size and tokenizer)
        model, tokenizer = load_policy(config.pretrained)
    else:
        tokenizer = build_char_tokenizer()
        model = build_tiny_llama(
            tokenizer, config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size
        )
    stages = config.stages()
    result, history = None, []
    for index, ((max_digits, steps), min_digits) in enumerate(zip(stages, config.stage_min_digits()), start=1):
        staged = len(stages) > 1
        examples = seed_examples(config, max_digits, index if staged else 0, min_digits)
        stage_config = replace(
            config,
            output_dir=str(Path(config.output_dir) / f"stage-{index}") if staged else config.output_dir,
            export_dir=str(config.pipeline_dir) if index == len(stages) else str(Path(config.output_dir) / f"stage-{index}" / "model"),
            max_train_steps=steps,
            max_digits=max_digits,
            seed=config.seed + index - 1,
        )
        rows, collate_fn = training_rows(config, tokenizer, examples)
        trainer = Trainer(
            model, SFTObjective(), rows, stage_config, export_fn=tokenizer_exporter(tokenizer), collate_fn=collate_fn
        )
        result = trainer.train()
        model = trainer.unwrapped_model
        history += [{**record, "stage": index} for record in result.history]
    return TrainResult(sum(steps for _, steps in stages), result.pipeline_dir, history, result.already_finished)


def accuracy(model, tokenizer, task: Task, problems, max_new_tokens: int = 64) -> float:
    """Greedy accuracy of ``model`` on ``problems`` judged by ``task.verify``."""
    completions = greedy_completions(model, tokenizer, [prompt_text(p.question) for p in problems], max_new_tokens)
    return sum(task.verify(p, c) for p, c in zip(problems, completions)) / len(problems)


def evaluate(
    model_path: str,
    output_dir: Path,
    task: str = "add",
    num_problems: int = 200,
    min_digits: int = 1,
    max_digits: int = 4,
    seed: int = EVAL_SEED,
) -> dict:
    """Greedy accuracy on ``num_problems`` held-out problems of ``task`` (digits of add/mul operands in
    ``[min_digits, max_digits]``, one less for mul's bound)."""
    model, tokenizer = load_policy(model_path)
    top = max_digits - (task == "mul")
    options = {} if task == "countdown" else {"min_digits": min(min_digits, top), "max_digits": top}
    task_object = get_task(task, **options)
    problems = task_object.sample(num_problems, seed, split="eval")
    score = accuracy(model, tokenizer, task_object, problems)
    metrics = {"task": task, "num_problems": num_problems, "accuracy": score}
    output_dir.mkdir(parents=True, exist_ok=True)
    return metrics


def demo(asset_dir: Path, output_dir: Path) -> dict:
    """Greedy accuracy of the bundled tiny LM on 50 held-out problems of each task."""
    tasks = ("add", "mul", "countdown")
    return {task: evaluate(str(asset_dir), output_dir, task, num_problems=50)["accuracy"] for task in tasks}


METHOD = Method(
    name="lm",
    summary="pretrain the tiny character-level Llama of assets/lm-arith on seeded worked examples",
    config_class=LMConfig,
    train=train,
    evaluate=evaluate,
    demo=demo,
    demo_asset="lm-arith",
)
