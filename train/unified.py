"""Joint pretraining of the unified model on synthetic scenes: generation and understanding at once.

``selfgen train unified --config configs/unified_shapes.yaml`` rebuilds ``assets/unified-shapes``.
Each batch trains both paths of the :class:`~selfgen.models.unified.UnifiedTransformer`:

``L = E ||v_theta(x_sigma, sigma, c) - (eps - x0)||^2 + lambda_und * CE(answer | image, question)``

with ``x_sigma = (1 - sigma) x0 + sigma eps``, ``sigma ~ U(0, 1)`` (rectified flow) and the prompt ``c``
dropped to the empty prompt with probability ``cfg_dropout`` (for classifier-free guidance).

``scrambled_fraction > 0`` (not in SRUM or BAGEL; ours) asks that fraction of the questions about a
patch-scrambled copy of the scene instead ("does the image show {prompt}?" -> "no",
:func:`~selfgen.data.scenes.scramble_patches`): the understanding path, which SRUM later uses as its judge
as is, then also knows that scattered patches of the right colours do not show the prompt, the failure
mode of an under-trained patch generator. Generation always learns from the intact scene.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import nn

from ..data.scenes import (
    BOS_ID,
    CATEGORIES,
    EOS_ID,
    MAX_PROMPT_TOKENS,
    MAX_QUESTION_TOKENS,
    PAD_ID,
    REGIONS,
    VOCAB,
    ScenesDataset,
    parse_prompt,
    prompt_split,
    question_in_region,
    render_scene,
    sample_scene,
    scene_questions,
)
from ..eval.plots import save_image_grid
from ..eval.scenes import SceneJudge, judge_image, ranking_auc
from ..models.unified import UnifiedTransformer
from ..pipelines.unified import UnifiedPipeline
from .config import TrainingConfig
from .registry import Method
from .trainer import Objective, TrainResult, Trainer


@dataclass
class UnifiedConfig(TrainingConfig):
    dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    patch_size: int = 4
    num_examples: int = 200000  # scenes in the (procedural) training set
    cfg_dropout: float = 0.1
    understanding_weight: float = 1.0
    questions_per_image: int = 1  # distinct questions answered about each training scene per step
    scrambled_fraction: float = 0.0  # question slots asked about a patch-scrambled scene instead (answer "no")
    eval_prompts_per_category: int = 16


def noisy_pair(
    images: torch.Tensor, sigmas: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_sigma, sigma, eps - x0)`` for clean ``images``: one rectified-flow training point per image."""
    noise = torch.randn_like(images)
    sigmas = torch.rand(images.shape[0], device=images.device) if sigmas is None else sigmas
    expanded = sigmas.view(-1, 1, 1, 1)
    return (1 - expanded) * images + expanded * noise, sigmas, noise - images


def empty_prompt_like(prompt_ids: torch.Tensor) -> torch.Tensor:
    empty = torch.full_like(prompt_ids, PAD_ID)
    empty[:, 0], empty[:, 1] = BOS_ID, EOS_ID
    return empty


class JointObjective(Objective):
    """Rectified-flow generation loss plus answer cross-entropy (see the module docstring)."""

    def __init__(self, cfg_dropout: float, understanding_weight: float) -> None:
        self.cfg_dropout = cfg_dropout
        self.understanding_weight = understanding_weight

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        images, prompt_ids = batch["pixel_values"], batch["prompt_ids"]
        drop = torch.rand(images.shape[0], device=images.device) < self.cfg_dropout
        prompt_ids = torch.where(drop[:, None], empty_prompt_like(prompt_ids), prompt_ids)
        noisy, sigmas, target = noisy_pair(images)
        output = model(
            sample=noisy,
            timestep=sigmas * 1000,
            prompt_ids=prompt_ids,
            pixel_values=batch["question_pixel_values"].flatten(0, 1),
            question_ids=batch["question_ids"].flatten(0, 1),
        )
        generation = F.mse_loss(output.sample.float(), target.float())
        logits = output.logits[:, -1].float()
        answers = batch["answer_id"].flatten()
        understanding = F.cross_entropy(logits, answers)
        accuracy = (logits.argmax(-1) == answers).float().mean()
        loss = generation + self.understanding_weight * understanding
        return loss, {
            "loss_generation": generation.item(),
            "loss_understanding": understanding.item(),
            "answer_accuracy": accuracy.item(),
        }


def collate(examples: list[dict]) -> dict:
    batch = {key: torch.stack([example[key] for example in examples]) for key in examples[0] if key != "prompt"}
    batch["prompt"] = [example["prompt"] for example in examples]
    return batch


def build_pipeline(model: UnifiedTransformer) -> UnifiedPipeline:
    return UnifiedPipeline(
        transformer=model, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    )


def export_pipeline(model: nn.Module, directory: Path) -> None:
    build_pipeline(model).save_pretrained(directory)


def train(config: UnifiedConfig) -> TrainResult:
    set_seed(config.seed)
    if config.pretrained:  # continue joint pretraining from an exported UnifiedPipeline
        if not Path(config.pretrained, "model_index.json").is_file():
            raise FileNotFoundError(
                f"pretrained={config.pretrained!r} is not a UnifiedPipeline folder (no model_index.json); "
                "stage 2 continues stage 1: run selfgen train unified --config configs/unified_shapes_stage1.yaml first"
            )
        model = UnifiedPipeline.from_pretrained(config.pretrained).transformer
    else:
        model = UnifiedTransformer(
            vocab_size=len(VOCAB),
            pad_token_id=PAD_ID,
            max_text_length=max(MAX_PROMPT_TOKENS, MAX_QUESTION_TOKENS),
            patch_size=config.patch_size,
            dim=config.dim,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
        )
    dataset = ScenesDataset(
        config.num_examples,
        "train",
        seed=config.seed,
        questions_per_image=config.questions_per_image,
        scrambled_fraction=config.scrambled_fraction,
    )
    objective = JointObjective(config.cfg_dropout, config.understanding_weight)
    return Trainer(model, objective, dataset, config, export_fn=export_pipeline, collate_fn=collate).train()


# ----------------------------------------------------------------------------- evaluation


def heldout_prompts(per_category: int, seed: int = 0, split: str = "heldout") -> list[str]:
    """Up to ``per_category`` held-out prompts of every category (never seen in training), seeded.

    ``split="train"`` draws training-split prompts instead (for tuning hyper-parameters without
    looking at the held-out prompts)."""
    rng = random.Random(seed)
    prompts = []
    for category in CATEGORIES:
        pool = list(prompt_split(category, split))
        prompts += rng.sample(pool, min(per_category, len(pool)))
    return prompts


def compositional_accuracy(
    pipe: UnifiedPipeline, prompts: list[str], seed: int = 0, samples_per_prompt: int = 1, **generate_options
) -> tuple[dict, np.ndarray]:
    """Generate ``samples_per_prompt`` images per prompt (different noise, seeded) and judge them with the
    rule-based :class:`SceneJudge` (per category, pooled, and the pooled standard error over prompts).

    The images come back in prompt order, ``samples_per_prompt`` consecutive images per prompt."""
    generator = torch.Generator().manual_seed(seed)
    repeated = [prompt for prompt in prompts for _ in range(samples_per_prompt)]
    images = pipe.generate(repeated, generator=generator, output_type="np", **generate_options).images
    return SceneJudge().evaluate(images, repeated, samples_per_prompt), images


def understanding_accuracy(pipe: UnifiedPipeline, num_scenes: int = 200, seed: int = 1) -> dict[str, float]:
    """Accuracy of the model's answers on freshly rendered scenes of held-out prompts, per question kind."""
    rng, pool = random.Random(seed), heldout_prompts(10**6)
    images, questions, answers = [], [], []
    for prompt in (rng.choice(pool) for _ in range(num_scenes)):
        spec = parse_prompt(prompt)
        objects = sample_scene(spec, rng)
        image = render_scene(objects)
        for question, answer in scene_questions(objects, spec, rng):
            images.append(image)
            questions.append(question)
            answers.append(answer)
    predicted = []
    for start in range(0, len(images), 256):
        predicted += pipe.understand(np.stack(images[start : start + 256]), questions[start : start + 256])
    kinds = [_question_kind(question) for question in questions]
    scores = {
        kind: float(np.mean([p == a for p, a, k in zip(predicted, answers, kinds) if k == kind]))
        for kind in sorted(set(kinds))
    }
    scores["overall"] = float(np.mean([p == a for p, a in zip(predicted, answers)]))
    return scores


def occupancy_auc(pipe: UnifiedPipeline, num_scenes: int = 200, seed: int = 1) -> float:
    """AUC of the model's ``P(yes | "is there an object in the {r}?")`` for occupied against empty quadrants
    of freshly rendered held-out scenes (every quadrant of every scene): 0.5 means the understanding path
    cannot tell where objects are, whatever its answers' accuracy (it may just answer the majority)."""
    rng, pool = random.Random(seed), heldout_prompts(10**6)
    images, questions, occupied = [], [], []
    for prompt in (rng.choice(pool) for _ in range(num_scenes)):
        objects = sample_scene(parse_prompt(prompt), rng)
        image = render_scene(objects)
        for region in REGIONS:
            images.append(image)
            questions.append(question_in_region(None, region))
            occupied.append(any(obj.region == region for obj in objects))
    probabilities = torch.cat(
        [
            pipe.yes_probability(np.stack(images[start : start + 256]), questions[start : start + 256]).cpu()
            for start in range(0, len(images), 256)
        ]
    )
    return ranking_auc(probabilities.numpy(), np.array(occupied))


def _question_kind(question: str) -> str:
    if question.startswith("does the image show"):
        return "whole_prompt"
    if question.startswith("how many"):
        return "count"
    return "region" if " in the " in question else "exists"


def generate(
    model_path: str,
    output_dir: Path,
    prompts: list[str] | None = None,
    num_inference_steps: int = 20,
    guidance_scale: float = 3.0,
    seed: int = 0,
) -> dict:
    """Generate one image per prompt (default: 4 held-out prompts per category) into ``output_dir/samples.png``."""
    pipe = UnifiedPipeline.from_pretrained(model_path)
    prompts = prompts or heldout_prompts(4, seed)
    generator = torch.Generator().manual_seed(seed)
    images = pipe.generate(prompts, num_inference_steps, guidance_scale, generator=generator, output_type="np").images
    output_dir.mkdir(parents=True, exist_ok=True)
    save_image_grid(images, output_dir / "samples.png")
    (output_dir / "prompts.json").write_text(json.dumps(prompts, indent=2))
    return {"grid": str(output_dir / "samples.png"), "prompts": prompts}


def evaluate(
    model_path: str,
    output_dir: Path,
    prompts_per_category: int = 32,
    num_scenes: int = 200,
    guidance_scale: float = 3.0,
    num_inference_steps: int = 20,
    samples_per_prompt: int = 1,
    split: str = "heldout",
    seed: int = 0,
) -> dict:
    """Compositional accuracy (rule-based judge) on ``split`` prompts (``"heldout"``: never trained on;
    ``"train"``: the prompts the model and SRUM saw), ``samples_per_prompt`` images each, and
    understanding accuracy on rendered held-out scenes; writes ``output_dir/metrics.json`` (with each
    prompt's accuracy, for paired comparisons of two models on the same prompts and noise) and the sample grid."""
    pipe = UnifiedPipeline.from_pretrained(model_path)
    pipe.set_progress_bar_config(disable=True)
    prompts = heldout_prompts(prompts_per_category, seed, split)
    generation, images = compositional_accuracy(
        pipe,
        prompts,
        seed,
        samples_per_prompt,
        guidance_scale=guidance_scale,
        num_inference_steps=num_inference_steps,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    save_image_grid(images[::samples_per_prompt], output_dir / "samples.png")
    correct = [judge_image(image, prompt) for image, prompt in zip(images, np.repeat(prompts, samples_per_prompt))]
    metrics = {
        "compositional_accuracy": generation,
        "per_prompt_accuracy": dict(zip(prompts, np.reshape(correct, (-1, samples_per_prompt)).mean(1).tolist())),
        "understanding_accuracy": understanding_accuracy(pipe, num_scenes, seed + 1),
        "understanding_occupancy_auc": occupancy_auc(pipe, num_scenes, seed + 1),
        "split": split,
        "num_prompts": len(prompts),
        "samples_per_prompt": samples_per_prompt,
        "grid": str(output_dir / "samples.png"),
    }
    return metrics


def demo(asset_dir: Path, output_dir: Path) -> dict:
    """Held-out prompts through the bundled unified model, judged by the rule-based detector."""
    return evaluate(str(asset_dir), output_dir, prompts_per_category=8, num_scenes=60)


METHOD = Method(
    name="unified",
    summary="joint pretraining of a small MoT unified model (flow-matching generation + VQA) on synthetic scenes",
    config_class=UnifiedConfig,
    train=train,
    generate=generate,
    evaluate=evaluate,
    demo=demo,
    demo_asset="unified-shapes",
)
