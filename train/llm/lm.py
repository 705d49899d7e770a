"""``selfgen train lm``: pretrain the tiny causal LM of ``assets/lm-arith`` on a seed set of worked examples.

The seed set mixes the tasks of :mod:`selfgen.data.tasks` (column addition, multiplication by a
digit, countdown) in the formats the recipes prompt with:

* plain: ``Q:<question>\\n`` -> ``S:<steps>\\nA:<answer>`` (most examples);
* hinted: ``Q:..\\nH:<answer>\\n`` -> the same solution (what STaR's rationalisation prompts with);
* revision: a correct first attempt, ``R:``, the same solution again (a base model that only restates,
  the starting point SCoRe must teach to correct);
* judge: a correct or one-digit-corrupted solution, ``J:``, the judge's own solution and ``V:Y|N``.

The loss is the SFT loss on the completion tokens. The same module's ``evaluate`` and ``demo``
measure greedy accuracy on held-out problems.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import set_seed

from ...data.tasks import (
    ArithmeticTask,
    CountdownTask,
    Task,
    corrupt_answer,
    extract_answer,
    get_task,
    judge_completion,
    judge_prompt,
    prompt_text,
    replace_answer,
    revision_prompt,
)
from ..config import TrainingConfig
from ..registry import Method
from ..trainer import TrainResult, Trainer
from .modeling import build_char_tokenizer, build_tiny_llama, load_policy, tokenizer_exporter
from .objectives import SFTCollator, SFTObjective, TextPair
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

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.format_weights) - set(SEED_FORMATS)
        if unknown:
            raise ValueError(f"format_weights has unknown formats {sorted(unknown)}; expected keys of {SEED_FORMATS}")


def seed_tasks(max_digits: int) -> dict[str, Task]:
    return {
        "add": ArithmeticTask("add", 1, max_digits),
        "mul": ArithmeticTask("mul", 1, max_digits - 1),
        "countdown": CountdownTask(num_numbers=3),
    }


def seed_example(task: Task, kind: str, rng: random.Random, problem_id: str) -> TextPair:
    """One pretraining example of format ``kind`` for a fresh problem of ``task``."""
    problem = task.make_problem(rng, problem_id)
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


SEED_FORMATS = ("plain", "hint", "revision", "judge")


def seed_examples(config: LMConfig) -> list[TextPair]:
    """The seeded pretraining set (formats and tasks drawn with ``config.*_weights``)."""
    rng = random.Random(config.seed)
    tasks = seed_tasks(config.max_digits)
    unknown = set(config.task_weights) - set(tasks)
    if unknown:
        raise ValueError(f"task_weights has unknown tasks {sorted(unknown)}; expected keys of {sorted(tasks)}")
    names, weights = zip(*config.task_weights.items())
    kinds, kind_weights = zip(*config.format_weights.items())
    examples = []
    for index in range(config.num_seed_examples):
        task = tasks[rng.choices(names, weights)[0]]
        examples.append(seed_example(task, rng.choices(kinds, kind_weights)[0], rng, f"seed-{index}"))
    return examples


def train(config: LMConfig) -> TrainResult:
    set_seed(config.seed)
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(
        tokenizer, config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size
    )
    trainer = Trainer(
        model,
        SFTObjective(),
        seed_examples(config),
        config,
        export_fn=tokenizer_exporter(tokenizer),
        collate_fn=SFTCollator(tokenizer, config.max_length),
    )
    return trainer.train()


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
