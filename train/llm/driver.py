"""The iteration driver: generate -> reward -> select/pair -> optimise -> evaluate, for K iterations.

A recipe subclasses :class:`IterativeTrainer` and implements :meth:`IterativeTrainer.build_round`,
which samples from the current policy, rewards, selects or pairs, and returns a :class:`Round`: the
objective (SFT / DPO / GRPO), its dataset and collator, and the round's own metrics. The driver then
runs one shared :class:`~selfgen.train.trainer.Trainer` on it (from the current policy, or from the
base model when the recipe restarts each iteration, as STaR and ReST-EM do), evaluates on held-out
problems and records the iteration:

    output_dir/iteration-k/            the Trainer's run (config.yaml, logs/metrics.jsonl)
    output_dir/iteration-k/model/      the iteration's policy (save_pretrained, reloadable)
    output_dir/metrics.jsonl           one line per iteration (iteration 0 = the starting model, or the
                                       model after the recipe's optional seed_round), with the
                                       iteration's wall time split into rollout / reward / update seconds
    output_dir/metrics.png             the recipe's key metrics per iteration
    config.pipeline_dir                the final policy (model + tokenizer)

``resume_from="latest"`` restarts after the last finished iteration.

Users' own parts plug in at construction: ``model=`` a folder or an ``nn.Module`` (with
``tokenizer=``, normalised by :func:`~selfgen.train.llm.prompts.prepare_tokenizer`), ``task=`` a name,
a problems JSONL or a :class:`~selfgen.data.tasks.Task`, ``prompt_format=`` a
:class:`~selfgen.train.llm.prompts.PromptFormat` (or ``config.prompt_format: chat``), ``reward_fn=``
(TRL's convention, :class:`~selfgen.train.llm.rewards.FunctionReward`) for the recipes whose reward
is a verifier, and ``verify_fn(problem, completion) -> bool`` for every recipe's notion of a correct
answer (selection of rejection-sampling recipes, diagnostics and held-out accuracy).

Training problems of iteration ``k`` come from ``task.sample(n, derive_seed(seed, k), "train")`` and
the held-out set from ``task.sample(eval_problems, EVAL_SEED, "eval")`` - the same problems for every
run seed, so runs are paired by item; the task's split guarantees they never meet.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import Dataset

from ...data.problems import Problem
from ...data.tasks import EVAL_FRACTION, Task, check_eval_fraction, derive_seed, get_task
from ...eval.plots import save_metric_curves
from ...eval.self_correction import flat_metrics, self_correction_metrics
from ..config import TrainingConfig
from ..lora import merge_lora_adapters
from ..trainer import Objective, Trainer, save_atomically
from .lm import EVAL_SEED
from .modeling import disable_dropout, load_policy, tokenizer_exporter
from .prompts import CHAT_SYSTEM_PROMPT, PROMPT_FORMATS, PromptFormat, get_prompt_format, prepare_tokenizer
from .rewards import CallableReward, FunctionReward, Reward, RewardFn, answer_key
from .revision import Episode, FeedbackFn, no_feedback, sample_revisions
from .rollout import Rollout, SamplingParams, generate_rollouts
from .vllm_backend import VLLMRollouts

logger = logging.getLogger("selfgen.train.llm")
ROLLOUT_BACKENDS = ("generate", "vllm")


@dataclass
class IterativeConfig(TrainingConfig):
    """Fields shared by every recipe; ``max_train_steps`` etc. apply to each iteration's optimisation."""

    model: str = "assets/lm-arith"
    task: str = "add"  # add | mul | countdown | add_hard (4-digit + shorter addend) | path to a problems JSONL
    min_digits: int = 1  # difficulty knob of add/mul: operand digits
    max_digits: int = 4
    eval_fraction: float = EVAL_FRACTION  # share of the task's questions held out for evaluation
    eval_file: str | None = None  # JSONL tasks: held-out problems in their own file (instead of eval_fraction)
    prompt_format: str = "arith"  # arith (Q:/A:, the bundled LM's) | chat (the tokenizer's chat template)
    system_prompt: str | None = CHAT_SYSTEM_PROMPT  # prompt_format chat: the system message (None: none)
    iterations: int = 3
    problems_per_iteration: int = 256
    eval_problems: int = 200
    samples_per_problem: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    max_length: int = 192
    generation_batch_size: int = 256
    max_train_steps: int = 60
    train_batch_size: int = 32
    learning_rate: float = 3e-4
    checkpointing_steps: int = 0
    logging_steps: int = 10
    report_to: str | None = None
    rollout_backend: str = "generate"  # generate (in-process, KV cache) | vllm (CUDA + vLLM installed)
    vllm_gpu_memory_utilization: float = 0.3
    torch_dtype: str = "float32"  # auto | float32 | bfloat16 | float16 (bf16/fp16/fp32): the policy's weights
    disable_dropout: bool = True  # dropout off in policy and reference (TRL's default): pi/pi_old = 1 before an update

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("iterations", "problems_per_iteration", "eval_problems", "samples_per_problem")
        check_eval_fraction(self.eval_fraction)
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {self.prompt_format!r}")
        if self.rollout_backend not in ROLLOUT_BACKENDS:
            raise ValueError(f"rollout_backend must be one of {ROLLOUT_BACKENDS}, got {self.rollout_backend!r}")


@dataclass
class Round:
    """What one iteration optimises: ``objective`` on ``dataset`` batched by ``collate_fn``."""

    objective: Objective
    dataset: Dataset | list
    collate_fn: Any
    logs: dict[str, float] = field(default_factory=dict)
    from_base: bool = False  # train the base model rather than the current policy (STaR, ReST-EM)
    max_train_steps: int | None = None  # overrides config.max_train_steps for this round
    learning_rate: float | None = None  # overrides config.learning_rate for this round
    seed: int | None = None  # overrides config.seed + iteration (the update's data order and dropout)


@dataclass
class IterationReport:
    history: list[dict[str, float]]
    model_dir: Path

    def __getitem__(self, index: int) -> dict[str, float]:
        return self.history[index]

    # what `selfgen train` prints for every method
    @property
    def pipeline_dir(self) -> Path:
        return self.model_dir

    @property
    def global_step(self) -> int:
        return int(sum(record.get("train_steps", 0) for record in self.history))

    @property
    def final_loss(self) -> float:
        losses = [record["train_loss"] for record in self.history if "train_loss" in record]
        return losses[-1] if losses else float("nan")


def build_task(config: IterativeConfig) -> Task:
    if config.task in ("add", "arith", "mul"):
        return get_task(
            config.task, min_digits=config.min_digits, max_digits=config.max_digits, eval_fraction=config.eval_fraction
        )
    if config.task in ("countdown", "add_hard"):
        return get_task(config.task, eval_fraction=config.eval_fraction)
    return get_task(config.task, eval_fraction=config.eval_fraction, eval_file=config.eval_file)


class IterativeTrainer:
    """Base of the recipes; see the module docstring. ``model``/``task`` may be paths/names or objects."""

    config_class = IterativeConfig
    plot_keys: tuple[str, ...] = ("accuracy",)
    uses_reward_fn = True  # False: the recipe's reward is not a verifier's (label-free, self-judged, games)

    def __init__(
        self,
        model: str | nn.Module | None = None,
        task: str | Task | None = None,
        config: IterativeConfig | None = None,
        tokenizer=None,
        *,
        prompt_format: str | PromptFormat | None = None,
        reward_fn: RewardFn | Sequence[RewardFn] | None = None,
        verify_fn: Callable[[Problem, str], bool] | None = None,
    ) -> None:
        self.config = config or self.config_class()
        set_seed(self.config.seed)
        model = model if model is not None else self.config.model
        if isinstance(model, (str, Path)):
            self.base_path: Path | None = Path(model)
            self.policy, self.tokenizer = load_policy(model, self.config.torch_dtype)
        else:
            if tokenizer is None:
                raise ValueError("pass tokenizer= together with a model object")
            self.base_path, self.policy, self.tokenizer = None, model, prepare_tokenizer(tokenizer)
        if self.config.disable_dropout:
            disable_dropout(self.policy)  # before any reference copy is taken
        self.base_state = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
        task = task if task is not None else self.config.task
        self.task = task if isinstance(task, Task) else build_task(replace(self.config, task=task))
        spec = prompt_format if prompt_format is not None else self.config.prompt_format
        self.format = get_prompt_format(spec, self.tokenizer, self.config.system_prompt)
        if reward_fn is not None and not self.uses_reward_fn:
            raise ValueError(
                f"{type(self).__name__} does not take reward_fn= (its reward is not a verifier's); "
                "verify_fn= sets what counts as a correct answer"
            )
        self.verify_fn = verify_fn
        self.reward: Reward = FunctionReward(reward_fn, self.prompt) if reward_fn is not None else CallableReward(self.verify)
        self.eval_set = self.task.sample(self.config.eval_problems, EVAL_SEED, split="eval")
        self.output_dir = Path(self.config.output_dir)
        self.rollout_seconds = 0.0  # time spent in `generate` since the driver last reset it
        self.policy_version = 0  # bumped when the policy's weights change; with the policy's id, the vLLM sync key
        self.vllm = VLLMRollouts(self.config.vllm_gpu_memory_utilization) if self.config.rollout_backend == "vllm" else None

    # ----------------------------------------------------------------- helpers for recipes

    def problems(self, iteration: int) -> list[Problem]:
        """This iteration's training problems (fresh draws from the task's training split)."""
        return self.task.sample(self.config.problems_per_iteration, derive_seed(self.config.seed, iteration))

    def prompt(self, problem: Problem, hint: bool = False) -> str:
        """The prompt of ``problem`` in the trainer's format; ``hint`` shows the reference answer."""
        return self.format.prompt(problem.question, problem.answer if hint else None)

    def verify(self, problem: Problem, completion: str) -> bool:
        """Whether ``completion`` answers ``problem`` correctly: ``verify_fn`` when given, else the
        task's verifier on the answer the prompt format reads."""
        if self.verify_fn is not None:
            return bool(self.verify_fn(problem, completion))
        return self.task.verify(problem, completion, self.format.answer)

    def verifier_rewards(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        """The verifier reward of each completion: ``reward_fn`` when given, else 1/0 from :meth:`verify`."""
        return self.reward(problems, completions)

    def answer_key(self, completion: str) -> str | None:
        """The completion's answer in the canonical form answers vote in."""
        return answer_key(completion, self.format.answer)

    def sample(
        self, prompts: list[str], temperature: float | None = None, num_samples: int | None = None, seed: int = 0
    ) -> list[Rollout]:
        config = self.config
        params = SamplingParams(
            temperature=config.temperature if temperature is None else temperature,
            top_p=config.top_p,
            num_samples=num_samples or config.samples_per_problem,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.generation_batch_size,
        )
        return self.generate(prompts, params, seed=seed)

    def generate(self, prompts: list[str], params: SamplingParams, seed: int = 0) -> list[Rollout]:
        """Rollouts of the current policy with explicit sampling parameters (stop strings, token budget),
        timed into ``time_rollout_s``; :meth:`sample` is this with the config's parameters."""
        start = time.perf_counter()
        rollouts = self._rollouts(prompts, params, seed)
        self.rollout_seconds += time.perf_counter() - start
        return rollouts

    def _rollouts(self, prompts: list[str], params: SamplingParams, seed: int = 0) -> list[Rollout]:
        if self.vllm is not None:
            return self.vllm.generate(
                self.policy, self.tokenizer, prompts, params, (id(self.policy), self.policy_version), seed=seed
            )
        return generate_rollouts(self.policy, self.tokenizer, prompts, params, seed=seed)

    def revisions(
        self,
        problems: list[Problem],
        rounds: int = 2,
        feedback: FeedbackFn = no_feedback,
        temperature: float | Sequence[float] | None = None,
        num_samples: int | None = None,
        max_new_tokens: int | Sequence[int] | None = None,
        seed: int = 0,
        verify: bool = True,
        **kwargs,
    ) -> list[Episode]:
        """Multi-round attempt -> feedback -> revision episodes of the current policy
        (:func:`~selfgen.train.llm.revision.sample_revisions`; the config's temperature, samples and
        token budget unless given, the trainer's format and verifier, timed into ``time_rollout_s``;
        on the vLLM backend every round is re-encoded through it). ``verify=False``: no verdicts
        (``Turn.correct`` is ``None``), for recipes whose iterations must not see the verifier."""
        config, start = self.config, time.perf_counter()
        episodes = sample_revisions(
            self.policy, self.tokenizer, self.format, problems, rounds=rounds,
            max_new_tokens=config.max_new_tokens if max_new_tokens is None else max_new_tokens,
            temperature=config.temperature if temperature is None else temperature, top_p=config.top_p,
            num_samples=num_samples or config.samples_per_problem, feedback=feedback, verify=self.verify if verify else None,
            batch_size=config.generation_batch_size, seed=seed,
            generate=None if self.vllm is None else self._rollouts, **kwargs,
        )
        self.rollout_seconds += time.perf_counter() - start
        return episodes

    def correction_table(self, problems: list[Problem], rounds: int = 2, feedback: FeedbackFn = no_feedback) -> list[list[bool]]:
        """Greedy multi-round episodes' verdicts, ``table[i][t]`` for problem i at round t (the input of
        :func:`~selfgen.eval.self_correction.self_correction_metrics`)."""
        episodes = self.revisions(problems, rounds=rounds, feedback=feedback, temperature=0.0, num_samples=1)
        return [[bool(ok) for ok in episode.correct] for episode in episodes]

    def correction_eval(self, problems: list[Problem], feedback: FeedbackFn = no_feedback) -> dict[str, float]:
        """Greedy two-round self-correction metrics (Acc@t1, Acc@t2, the Deltas, CL, CS, RSS) with their
        standard errors over problems (``*_se``; :mod:`selfgen.eval.self_correction`)."""
        return flat_metrics(self_correction_metrics(self.correction_table(problems, feedback=feedback)))

    def solve(self, problems: list[Problem], **kwargs) -> list[Rollout]:
        return self.sample([self.prompt(p) for p in problems], **kwargs)

    def load_model(self, path: str | Path) -> tuple[nn.Module, Any]:
        """A saved policy (a resumed iteration, another collective member) as the starting model was
        loaded: ``config.torch_dtype``, dropout off unless ``config.disable_dropout`` is false."""
        policy, tokenizer = load_policy(path, self.config.torch_dtype)
        if self.config.disable_dropout:
            disable_dropout(policy)
        return policy, tokenizer

    def fresh_base(self) -> nn.Module:
        """A copy of the starting model (for recipes that fine-tune the base model every iteration)."""
        import copy

        model = copy.deepcopy(self.policy)
        model.load_state_dict(self.base_state)
        return model

    # ----------------------------------------------------------------- the recipe's parts

    def build_round(self, iteration: int) -> Round:
        raise NotImplementedError

    def seed_round(self) -> Round | None:
        """An optional supervised stage before iteration 1 (self-rewarding DPO's seed IFT + EFT); ``None``: none.

        When given, the starting model is evaluated (``base_*`` in the iteration-0 record), the round is
        optimised into ``output_dir/iteration-0`` and iteration 0 records the seeded model.
        """
        return None

    def evaluate(self) -> dict[str, float]:
        """Held-out greedy accuracy; recipes add their own metrics."""
        rollouts = self.solve(self.eval_set, temperature=0.0, num_samples=1)
        return {"accuracy": sum(self.verify(p, r.text) for p, r in zip(self.eval_set, rollouts)) / len(rollouts)}

    # ----------------------------------------------------------------- the loop

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    def _resume(self) -> tuple[list[dict[str, float]], int]:
        if self.config.resume_from != "latest" or not self.metrics_path.is_file():
            self.metrics_path.unlink(missing_ok=True)  # a fresh run starts a fresh log
            return [], 0
        history = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        done = history[-1]["iteration"] if history else 0
        if done or (history and "seed_train_steps" in history[0]):
            self.policy, self.tokenizer = self.load_model(self.iteration_dir(done) / "model")
            self.policy_version += 1
            logger.info("resumed after iteration %d", done)
        return history, done

    def iteration_dir(self, iteration: int) -> Path:
        return self.output_dir / f"iteration-{iteration}"

    def _record(self, history: list[dict[str, float]], record: dict[str, float]) -> None:
        history.append(record)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        curves = [{"step": r["iteration"], **r} for r in history]
        keys = [key for key in self.plot_keys if any(key in record for record in history)]
        save_metric_curves(curves, keys, self.output_dir / "metrics.png")

    def optimise(self, iteration: int, round_: Round) -> dict[str, float]:
        if len(round_.dataset) == 0:
            logger.warning("iteration %d selected no data: the policy is unchanged", iteration)
            return {"train_examples": 0.0}
        run_dir = self.iteration_dir(iteration)
        config = replace(
            self.config,
            output_dir=str(run_dir),
            export_dir=str(run_dir / "model"),
            max_train_steps=round_.max_train_steps or self.config.max_train_steps,
            learning_rate=round_.learning_rate or self.config.learning_rate,
            train_batch_size=min(self.config.train_batch_size, len(round_.dataset)),
            resume_from=None,
            seed=self.config.seed + iteration if round_.seed is None else round_.seed,
        )
        model = self.fresh_base() if round_.from_base else self.policy
        if self.config.disable_dropout:
            disable_dropout(model)
        trainer = Trainer(
            model.train(), round_.objective, round_.dataset, config,
            export_fn=tokenizer_exporter(self.tokenizer), collate_fn=round_.collate_fn,
        )
        result = trainer.train()
        policy = trainer.unwrapped_model
        self.policy = (merge_lora_adapters(policy) if config.lora_rank > 0 else policy).eval()
        self.policy_version += 1
        return {
            "train_examples": float(len(round_.dataset)),
            "train_loss": result.final_loss,
            "train_steps": float(result.global_step),
        }

    def timed_round(self, iteration: int) -> tuple[Round, dict[str, float]]:
        """``build_round`` and its wall time: ``time_rollout_s`` in :meth:`sample`, the rest (rewarding,
        judging, selecting, pairing) as ``time_reward_s``."""
        self.rollout_seconds = 0.0
        start = time.perf_counter()
        round_ = self.build_round(iteration)
        total = time.perf_counter() - start
        return round_, {"time_rollout_s": self.rollout_seconds, "time_reward_s": total - self.rollout_seconds}

    def train(self) -> IterationReport:
        history, done = self._resume()
        if not history:
            record: dict[str, float] = {"iteration": 0}
            seed_round = self.seed_round()
            if seed_round is not None:
                record.update({f"base_{key}": value for key, value in self.evaluate().items()})
                train_logs = self.optimise(0, seed_round)
                record.update({**seed_round.logs, **{f"seed_{key}": value for key, value in train_logs.items()}})
            self._record(history, {**record, **self.evaluate()})
        for iteration in range(done + 1, self.config.iterations + 1):
            round_, timings = self.timed_round(iteration)
            start = time.perf_counter()
            train_logs = self.optimise(iteration, round_)
            timings["time_update_s"] = time.perf_counter() - start
            record = {"iteration": iteration, **round_.logs, **train_logs, **timings, **self.evaluate()}
            self._record(history, record)
            logger.info("iteration %d: %s", iteration, record)
        export = tokenizer_exporter(self.tokenizer)
        save_atomically(lambda directory: export(self.policy, directory), self.config.pipeline_dir)
        return IterationReport(history, self.config.pipeline_dir)


def run_recipe(trainer_class: type[IterativeTrainer]):
    """The ``train(config)`` of a recipe's ``Method``: build the trainer from the config and run it."""

    def train(config: IterativeConfig) -> IterationReport:
        return trainer_class(config=config).train()

    return train
