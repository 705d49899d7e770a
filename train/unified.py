"""Pretraining of the unified model on synthetic scenes: generation and understanding, jointly or by stage.

``selfgen train unified --config configs/unified_shapes_latent_repair2.yaml --export_dir assets/unified-shapes``
rebuilds ``assets/unified-shapes``, the last stage of the latent chain (the frozen scene autoencoder, latent generation
stages 1-2, judge stages J3-J6b, generation repairs J7-J7b, each continuing the previous export; listed in
``configs/unified_shapes_latent_judge.yaml``, measured in ``docs/srum.md``); ``configs/unified_shapes_stage*.yaml``
is the former pixel (patch-mosaic) base, ``configs/unified_shapes_conv_*.yaml`` the generation-first recipe with a
conv stem/head.
A batch trains either or both paths of the :class:`~selfgen.models.unified.UnifiedTransformer`:

``L = w_gen E ||v_theta(x_sigma, sigma, c) - (eps - x0)||^2 + w_und CE(answer | image, question)``

with ``x_sigma = (1 - sigma) x0 + sigma eps``, ``sigma ~ U(0, 1)`` (rectified flow) and the prompt ``c``
dropped to the empty prompt with probability ``cfg_dropout`` (for classifier-free guidance). A weight of 0
skips that path's forward pass: the conv recipe pretrains generation alone (its stages 1-2,
``understanding_weight: 0``), then the judge alone (``generation_weight: 0`` with
``train_parameters: understanding``), so that generation pretraining stops where it still has room.

``scrambled_fraction > 0`` (not in SRUM or BAGEL; ours) asks that fraction of the questions about a
patch-scrambled copy of the scene instead ("does the image show {prompt}?" -> "no",
:func:`~selfgen.data.scenes.scramble_patches`): the understanding path, which SRUM later uses as its judge
as is, then also knows that scattered patches of the right colours do not show the prompt, the failure
mode of an under-trained patch generator. Generation always learns from the intact scene.

``region_fraction > 0`` (ours) replaces that fraction of the question slots by region questions ("is there
an object / a {noun} in the {region}?") and ``occupancy_fraction`` by the occupancy question alone, the other
question kinds staying in the mix, and
``train_parameters: understanding`` freezes the generation expert
(:meth:`~selfgen.models.unified.UnifiedTransformer.generation_parameters`): together they make the
understanding stages (``configs/unified_shapes_stage4.yaml``, ``configs/unified_shapes_conv_judge.yaml``) that teach the understanding path where objects are and
whether a whole prompt holds (``prompt_fraction``: "does the image show {prompt}?" with training-split hard
negatives). Prompt tokens pass through the understanding expert on the generation side too, so such a
stage changes generation. ``train_parameters: generation`` (with ``understanding_weight: 0``) is the converse,
the repair stage ``configs/unified_shapes_conv_repair.yaml``: the generation expert relearns to read the prompt
encoding the judge stages moved, and every understanding weight, hence the judge, stays bit for bit.
``occupancy_eval_steps > 0`` logs :func:`occupancy_auc` and :func:`judge_verification` every that many steps
to ``logs/occupancy_auc.jsonl``. ``new_understanding_encoder`` (with ``pretrained``) replaces the checkpoint's
understanding patch embedding by a fresh one of ``patch_size`` with an ``understanding_conv_channels`` conv
stem (:func:`with_new_understanding_encoder`): the judge recipe ``configs/unified_shapes_conv_judge.yaml``.
``generation_autoencoder`` (a folder exported by ``selfgen train scene_autoencoder``) is BAGEL's latent generation:
``x0`` above is the frozen autoencoder's normalised latent of the scene
(:func:`~selfgen.models.scene_autoencoder.encode_latents`), the transformer denoises its 8x8 grid, and the export
holds the autoencoder as the pipeline's ``vae`` (``configs/unified_shapes_latent.yaml``; docs/srum.md, fifteenth pass).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from torch import nn

from ..data.scenes import (
    BOS_ID,
    CATEGORIES,
    EOS_ID,
    MAX_PROMPT_TOKENS,
    MAX_QUESTION_TOKENS,
    PAD_ID,
    TOKEN_IDS,
    REGIONS,
    VOCAB,
    PromptSpec,
    SceneObject,
    ScenesDataset,
    parse_prompt,
    prompt_split,
    perturb_prompt,
    question_about_prompt,
    question_in_region,
    region_questions,
    render_scene,
    sample_scene,
    scene_questions,
)
from ..eval.plots import save_image_grid
from ..eval.scenes import SceneJudge, per_prompt_accuracy, ranking_auc, single_object_report
from ..eval.statistics import bootstrap_interval
from ..models.scene_autoencoder import encode_latents
from ..models.unified import UnifiedTransformer
from ..pipelines.unified import UnifiedPipeline
from .config import TrainingConfig
from .losses import noisy_pair
from .registry import Method
from .trainer import Objective, Trainer, TrainerCallback, TrainResult


TRAIN_PARAMETERS = ("all", "understanding", "generation")
NO_ID = TOKEN_IDS["no"]
MONITOR_SEED = 1000  # the scenes the training-time judge log uses (evaluate reports other scenes)


@dataclass
class UnifiedConfig(TrainingConfig):
    dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    patch_size: int = 4  # understanding patches (BAGEL: the ViT side)
    generation_patch_size: int = 0  # generation patches (BAGEL: the VAE side); 0: patch_size
    generation_conv_channels: int = 0  # > 0: a 3x3 conv stem/head of that width around the generation patches
    understanding_conv_channels: int = 0  # > 0: a 3x3 conv stem of that width before the understanding patches
    new_understanding_encoder: bool = False  # with pretrained: a fresh understanding encoder (patch_size, conv stem)
    learned_understanding_positions: bool = False  # train the understanding position table (from sin-cos)
    understanding_position_scale: float = 0.0  # > 0: that table restarts at scale x sin-cos over pixel offsets
    generation_adaln: bool = False  # adaLN timestep modulation of the generation expert (zero-init; added to pretrained)
    generation_adaln_prompt: bool = False  # with generation_adaln: the pooled prompt joins the adaLN condition
    generation_conv_blocks: int = 0  # timestep-conditioned residual conv blocks around the generation trunk (from scratch)
    generation_autoencoder: str | None = None  # a frozen scene autoencoder folder: generation on its latents (from scratch)
    num_examples: int = 200000  # scenes in the (procedural) training set
    cfg_dropout: float = 0.1
    understanding_weight: float = 1.0
    generation_weight: float = 1.0  # 0 skips the flow-matching forward (an understanding-only stage)
    questions_per_image: int = 1  # distinct questions answered about each training scene per step
    scrambled_fraction: float = 0.0  # question slots asked about a patch-scrambled scene instead (answer "no")
    region_fraction: float = 0.0  # question slots replaced by a region question (occupancy or noun in a quadrant)
    occupancy_fraction: float = 0.0  # question slots replaced by "is there an object in the {region}?"
    prompt_fraction: float = 0.0  # question slots replaced by "does the image show {prompt / a hard negative}?"
    located_fraction: float = 0.0  # question slots replaced by "is there a {present noun} in the {region}?"
    relation_fraction: float = 0.0  # question slots replaced by the whole prompt against its opposite relation
    relation_pair_fraction: float = 0.0  # scenes asked the relation shown and its direction flip (2 slots)
    question_lm_weight: float = 0.0  # > 0: also next-token CE on the question words given the image
    question_lm_true_only: bool = False  # that CE only on questions not answered "no" (true statements)
    train_parameters: str = "all"  # "all"; "understanding": the generation expert frozen; "generation": all else frozen
    occupancy_eval_steps: int = 0  # > 0: log occupancy_auc every that many steps
    eval_prompts_per_category: int = 16
    prompt_categories: list[str] = field(default_factory=list)  # training prompts of these categories only ([]: all)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.understanding_weight == 0 and self.generation_weight == 0:
            raise ValueError("understanding_weight and generation_weight are both 0: nothing would train")
        if self.train_parameters not in TRAIN_PARAMETERS:
            raise ValueError(f"train_parameters must be one of {TRAIN_PARAMETERS}, got {self.train_parameters!r}")


def empty_prompt_like(prompt_ids: torch.Tensor) -> torch.Tensor:
    empty = torch.full_like(prompt_ids, PAD_ID)
    empty[:, 0], empty[:, 1] = BOS_ID, EOS_ID
    return empty


class JointObjective(Objective):
    """Rectified-flow generation loss plus answer cross-entropy (see the module docstring)."""

    def __init__(
        self,
        cfg_dropout: float,
        understanding_weight: float,
        generation_weight: float = 1.0,
        question_lm_weight: float = 0.0,
        question_lm_true_only: bool = False,
        autoencoder: AutoencoderKL | None = None,
    ) -> None:
        """``autoencoder``: a frozen autoencoder whose latents of the scenes are what generation learns (BAGEL)."""
        self.autoencoder = autoencoder
        self.cfg_dropout = cfg_dropout
        self.understanding_weight = understanding_weight
        self.generation_weight = generation_weight
        self.question_lm_weight = question_lm_weight
        self.question_lm_true_only = question_lm_true_only

    def _generation_inputs(self, batch: dict) -> tuple[dict, torch.Tensor | None]:
        """The flow-matching inputs and target, or nothing when the generation loss is off."""
        if self.generation_weight == 0:
            return {}, None
        images, prompt_ids = batch["pixel_values"], batch["prompt_ids"]
        drop = torch.rand(images.shape[0], device=images.device) < self.cfg_dropout
        prompt_ids = torch.where(drop[:, None], empty_prompt_like(prompt_ids), prompt_ids)
        if self.autoencoder is not None:
            with torch.no_grad():
                images = encode_latents(self.autoencoder.to(images.device), images)
        noisy, sigmas, target = noisy_pair(images)
        return {"sample": noisy, "timestep": sigmas * 1000, "prompt_ids": prompt_ids}, target

    def _understanding_inputs(self, batch: dict) -> dict:
        """The questions and their images, or nothing when the understanding loss is off."""
        if self.understanding_weight == 0:
            return {}
        return {
            "pixel_values": batch["question_pixel_values"].flatten(0, 1),
            "question_ids": batch["question_ids"].flatten(0, 1),
        }

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        inputs, target = self._generation_inputs(batch)
        output = model(**inputs, **self._understanding_inputs(batch))
        loss, logs = torch.zeros((), device=batch["pixel_values"].device), {}
        if output.logits is not None:
            logits = output.logits[:, -1].float()
            answers = batch["answer_id"].flatten()
            understanding = F.cross_entropy(logits, answers)
            accuracy = (logits.argmax(-1) == answers).float().mean()
            logs = {"loss_understanding": understanding.item(), "answer_accuracy": accuracy.item()}
            loss = self.understanding_weight * understanding
            if self.question_lm_weight > 0:
                true = answers != NO_ID if self.question_lm_true_only else None
                question_lm = question_lm_loss(output.logits, batch["question_ids"].flatten(0, 1), true)
                loss = loss + self.question_lm_weight * question_lm
                logs["loss_question_lm"] = question_lm.item()
        if target is not None:
            generation = F.mse_loss(output.sample.float(), target.float())
            loss = loss + self.generation_weight * generation
            logs["loss_generation"] = generation.item()
        return loss, logs


def question_lm_loss(
    logits: torch.Tensor, question_ids: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token cross-entropy over the question's own words given the image: position ``t`` predicts
    token ``t + 1`` wherever both are real tokens (not padding); the answer, predicted at ``<a>``, is not
    part of it. ``keep`` (``(B,)`` bool) restricts it to those questions, e.g. the true statements: on a
    "no" question the words are false about the image (a relation asked against its opposite half the time
    teaches the relation word nothing), on a "yes" question ``is there a red circle in the ___`` is where the
    red circle is."""
    targets = question_ids[:, 1:]
    valid = (question_ids[:, :-1] != PAD_ID) & (targets != PAD_ID)
    if keep is not None:
        valid = valid & keep[:, None]
    return F.cross_entropy(logits[:, :-1][valid].float(), targets[valid])


def collate(examples: list[dict]) -> dict:
    batch = {key: torch.stack([example[key] for example in examples]) for key in examples[0] if key != "prompt"}
    batch["prompt"] = [example["prompt"] for example in examples]
    return batch


class OccupancyCallback(TrainerCallback):
    """Every ``every_steps`` updates, appends the current weights' :func:`occupancy_auc` (does the judge
    know where objects are?) and :func:`judge_verification` (whole-prompt and region answers on rendered
    held-out scenes drawn with :data:`MONITOR_SEED`, not the scenes ``evaluate`` reports) to
    ``logs/occupancy_auc.jsonl``."""

    def __init__(self, every_steps: int, num_scenes: int = 200, vae: AutoencoderKL | None = None) -> None:
        self.every_steps, self.num_scenes, self.vae = every_steps, num_scenes, vae

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if trainer.global_step % self.every_steps or not trainer.is_main_process:
            return
        model = trainer.unwrapped_model
        model.eval()
        with torch.no_grad(), trainer.accelerator.autocast():
            pipe = build_pipeline(model, self.vae)
            record = {"step": trainer.global_step, "occupancy_auc": occupancy_auc(pipe, self.num_scenes)}
            record.update(judge_verification(pipe, self.num_scenes, seed=MONITOR_SEED))
        model.train()
        record["loss_understanding"] = logs.get("loss_understanding")
        with open(trainer.logs_dir / "occupancy_auc.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")


def build_pipeline(model: UnifiedTransformer, vae: AutoencoderKL | None = None) -> UnifiedPipeline:
    return UnifiedPipeline(
        transformer=model, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0), vae=vae
    )


def export_pipeline(model: nn.Module, directory: Path, vae: AutoencoderKL | None = None) -> None:
    """Save ``model`` (and the frozen ``vae`` a latent-generation model decodes with) as a ``UnifiedPipeline``."""
    build_pipeline(model, vae).save_pretrained(directory)


def _autoencoder_folder(folder: str | Path) -> Path:
    if not Path(folder, "config.json").is_file():
        raise FileNotFoundError(
            f"generation_autoencoder={str(folder)!r} is not an autoencoder folder (no config.json): train it first with "
            "selfgen train scene_autoencoder --config configs/scene_autoencoder.yaml"
        )
    return Path(folder)


def load_autoencoder(folder: str | Path) -> AutoencoderKL:
    """The frozen scene autoencoder exported by ``selfgen train scene_autoencoder`` (no gradients, eval mode)."""
    autoencoder = AutoencoderKL.from_pretrained(_autoencoder_folder(folder)).eval()
    autoencoder.requires_grad_(False)
    return autoencoder


def _latent_grid(config: UnifiedConfig) -> dict:
    """The transformer's latent-generation fields for ``config.generation_autoencoder`` (none without one), read from
    the autoencoder's config alone (its weights are loaded once, by the caller that needs them)."""
    if not config.generation_autoencoder:
        return {}
    autoencoder = AutoencoderKL.load_config(_autoencoder_folder(config.generation_autoencoder))
    downsample = 2 ** (len(autoencoder["block_out_channels"]) - 1)
    return {
        "generation_latent_channels": autoencoder["latent_channels"],
        "generation_latent_size": autoencoder["sample_size"] // downsample,
    }


def _rebuilt(model: UnifiedTransformer, fresh_prefixes: tuple[str, ...], **config_changes) -> UnifiedTransformer:
    """``model`` rebuilt with ``config_changes``: the weights named by ``fresh_prefixes`` (and any the new config
    adds) keep their initialisation, every other weight is copied."""
    fresh = UnifiedTransformer.from_config(
        model.config, generation_patch_size=model.generation_patch_size, **config_changes
    )
    kept = {name: value for name, value in model.state_dict().items() if not name.startswith(fresh_prefixes)}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    added = set(fresh.state_dict()) - set(model.state_dict())
    if unexpected or not all(name.startswith(fresh_prefixes) or name in added for name in missing):
        raise RuntimeError(f"rebuilding the model with {config_changes}: unexpected {unexpected}, missing {missing}")
    return fresh


def with_new_understanding_encoder(
    model: UnifiedTransformer, patch_size: int, understanding_conv_channels: int
) -> UnifiedTransformer:
    """``model`` with a freshly initialised understanding image encoder (``patch_size`` patches, a conv stem of
    ``understanding_conv_channels``; 0: none); every other weight, the generation patches included, is kept."""
    encoder = ("und_patch_embed.", "und_conv_in.")
    return _rebuilt(
        model, encoder, patch_size=patch_size, understanding_conv_channels=understanding_conv_channels
    )


def with_learned_understanding_positions(model: UnifiedTransformer, scale: float = 0.0) -> UnifiedTransformer:
    """``model`` whose understanding position table is a trained parameter, every other weight kept.

    ``scale = 0``: the table starts at the fixed sin-cos table (the same function). ``scale > 0``: it starts at
    ``scale`` times the 2-D sin-cos table over the patches' pixel offsets (patch index x patch side): on a 4x4
    grid the index table's positions are 0.93 cosine-similar (neighbours 0.98), the pixel table's 0.72."""
    learned = _rebuilt(model, (), learned_understanding_positions=True)
    if scale > 0:
        size, patch = model.config.sample_size, model.config.patch_size
        pixel_offsets = get_2d_sincos_pos_embed(
            model.config.dim, size // patch, base_size=size // patch, interpolation_scale=1 / patch, output_type="pt"
        )
        with torch.no_grad():
            learned.und_image_pos.copy_(scale * pixel_offsets.float()[None])
    return learned


def with_generation_adaln(model: UnifiedTransformer, prompt: bool = False) -> UnifiedTransformer:
    """``model`` with zero-initialised adaLN modulation of its generation expert (the timestep embedding, and with
    ``prompt`` the pooled prompt, as condition; :class:`~selfgen.models.unified.MoTBlock`): the same function at
    step 0, every existing weight kept."""
    return _rebuilt(model, (), generation_adaln=True, generation_adaln_prompt=prompt)


def new_model(config: UnifiedConfig) -> UnifiedTransformer:
    """A freshly initialised :class:`UnifiedTransformer` with ``config``'s architecture (training from scratch; also
    the skeleton a resumable checkpoint's weights load into)."""
    return UnifiedTransformer(
        vocab_size=len(VOCAB),
        pad_token_id=PAD_ID,
        max_text_length=max(MAX_PROMPT_TOKENS, MAX_QUESTION_TOKENS),
        patch_size=config.patch_size,
        generation_patch_size=config.generation_patch_size or None,
        generation_conv_channels=config.generation_conv_channels,
        understanding_conv_channels=config.understanding_conv_channels,
        learned_understanding_positions=config.learned_understanding_positions,
        generation_adaln=config.generation_adaln,
        generation_adaln_prompt=config.generation_adaln_prompt,
        generation_conv_blocks=config.generation_conv_blocks,
        **_latent_grid(config),
        dim=config.dim,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
    )


def checkpoint_pipeline(checkpoint: str | Path) -> UnifiedPipeline:
    """:func:`checkpoint_model` in a pipeline, with the run's frozen autoencoder when it generates latents."""
    model = checkpoint_model(checkpoint)
    autoencoder = _checkpoint_config(Path(checkpoint)).generation_autoencoder
    return build_pipeline(model, load_autoencoder(autoencoder) if autoencoder else None)


def _checkpoint_config(checkpoint: Path) -> UnifiedConfig:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return UnifiedConfig(**{k: v for k, v in state["config"].items() if k in UnifiedConfig.__dataclass_fields__})


def checkpoint_model(checkpoint: str | Path) -> UnifiedTransformer:
    """The model of a from-scratch run at one of its resumable checkpoints (``checkpoints/step-N``) with the EMA
    weights, i.e. what the run's export would hold at that step (``use_ema: true`` runs only): for measuring
    accuracy against steps while a run trains."""
    checkpoint = Path(checkpoint)
    config = _checkpoint_config(checkpoint)
    if config.pretrained or not config.use_ema:
        raise ValueError(f"{checkpoint}: only from-scratch runs with use_ema are rebuilt from a checkpoint")
    model = new_model(config)
    shadow = torch.load(checkpoint / "custom_checkpoint_0.pkl", map_location="cpu", weights_only=True)["shadow_params"]
    params = list(model.parameters())
    if len(shadow) != len(params) or any(s.shape != p.shape for s, p in zip(shadow, params)):
        raise ValueError(f"{checkpoint}: the EMA weights do not match the config's architecture")
    with torch.no_grad():
        for param, value in zip(params, shadow):
            param.copy_(value)
    return model.eval()


def train(config: UnifiedConfig) -> TrainResult:
    set_seed(config.seed)
    if config.pretrained:  # continue joint pretraining from an exported UnifiedPipeline
        if not Path(config.pretrained, "model_index.json").is_file():
            raise FileNotFoundError(
                f"pretrained={config.pretrained!r} is not a UnifiedPipeline folder (no model_index.json); "
                "each stage continues the previous one's export: run the previous stage's config first "
                "(configs/unified_shapes_stage1.yaml, _stage2.yaml, unified_shapes.yaml, _stage4.yaml; or the "
                "configs/unified_shapes_conv_*.yaml chain)"
            )
        if config.generation_autoencoder:
            raise ValueError(
                "generation_autoencoder is set when training from scratch; a pretrained pipeline keeps its own vae"
            )
        pretrained = UnifiedPipeline.from_pretrained(config.pretrained)
        model, vae = pretrained.transformer, pretrained.vae
        if config.new_understanding_encoder:
            model = with_new_understanding_encoder(model, config.patch_size, config.understanding_conv_channels)
        if config.learned_understanding_positions and not model.config.learned_understanding_positions:
            model = with_learned_understanding_positions(model, config.understanding_position_scale)
        if config.generation_adaln and not model.config.generation_adaln:
            model = with_generation_adaln(model, config.generation_adaln_prompt)
        if config.generation_conv_blocks != model.config.generation_conv_blocks:
            raise ValueError(
                f"generation_conv_blocks: {config.generation_conv_blocks} but the pretrained model has "
                f"{model.config.generation_conv_blocks}; the option is set when training from scratch"
            )
    else:
        model = new_model(config)
        vae = load_autoencoder(config.generation_autoencoder) if config.generation_autoencoder else None
    dataset = ScenesDataset(
        config.num_examples,
        "train",
        seed=config.seed,
        questions_per_image=config.questions_per_image,
        scrambled_fraction=config.scrambled_fraction,
        region_fraction=config.region_fraction,
        occupancy_fraction=config.occupancy_fraction,
        prompt_fraction=config.prompt_fraction,
        located_fraction=config.located_fraction,
        relation_fraction=config.relation_fraction,
        relation_pair_fraction=config.relation_pair_fraction,
        categories=tuple(config.prompt_categories) or CATEGORIES,
    )
    if config.train_parameters != "all":
        generation = {id(param) for param in model.generation_parameters()}
        for param in model.parameters():
            param.requires_grad_((id(param) in generation) == (config.train_parameters == "generation"))
    objective = JointObjective(
        config.cfg_dropout,
        config.understanding_weight,
        config.generation_weight,
        config.question_lm_weight,
        config.question_lm_true_only,
        autoencoder=vae,
    )
    callbacks = [OccupancyCallback(config.occupancy_eval_steps, vae=vae)] if config.occupancy_eval_steps > 0 else []

    export = functools.partial(export_pipeline, vae=vae)
    trainer = Trainer(model, objective, dataset, config, export_fn=export, collate_fn=collate, callbacks=callbacks)
    return trainer.train()


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
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Generate ``samples_per_prompt`` images per prompt (different noise, seeded) and judge them with the
    rule-based :class:`SceneJudge` (per category, pooled, and the pooled standard error over prompts).

    Returns ``(scores, images, correct)``: the images in prompt order, ``samples_per_prompt`` consecutive images
    per prompt, and the judge's verdict on each (for :func:`~selfgen.eval.scenes.per_prompt_accuracy`)."""
    generator = torch.Generator().manual_seed(seed)
    repeated = [prompt for prompt in prompts for _ in range(samples_per_prompt)]
    images = pipe.generate(repeated, generator=generator, output_type="np", **generate_options).images
    judge = SceneJudge()
    correct = judge.verdicts(images, repeated)
    return judge.summarize(correct, repeated, samples_per_prompt), images, correct


def single_object_validation(
    pipe: UnifiedPipeline, seed: int = 100, samples_per_prompt: int = 2
) -> tuple[dict, np.ndarray, list[str]]:
    """The single-object VALIDATION set of docs/srum.md (eleventh pass on): the training-split ``colour`` and
    ``size`` prompts of ``heldout_prompts(16, seed, split="train")`` (26 at seed 100), ``samples_per_prompt`` noises
    each, 20 Euler steps, guidance 3, the noise seeded by ``seed``; judged by
    :func:`~selfgen.eval.scenes.single_object_report`. Returns ``(report, images, prompts)``, the images in prompt
    order, ``samples_per_prompt`` consecutive images per prompt."""
    prompts = [p for p in heldout_prompts(16, seed, split="train") if parse_prompt(p).category in ("colour", "size")]
    repeated = [prompt for prompt in prompts for _ in range(samples_per_prompt)]
    images = pipe.generate(repeated, num_inference_steps=20, guidance_scale=3.0,
                           generator=torch.Generator().manual_seed(seed), output_type="np").images
    return single_object_report(images, repeated), images, prompts


def rendered_heldout_scenes(num_scenes: int, rng: random.Random) -> Iterator[tuple[PromptSpec, list[SceneObject], np.ndarray]]:
    """``num_scenes`` scenes of held-out prompts drawn with ``rng``, one at a time: ``(spec, objects, image)``
    (the caller may draw from ``rng`` between scenes, e.g. for their questions)."""
    pool = heldout_prompts(10**6)
    for _ in range(num_scenes):
        spec = parse_prompt(rng.choice(pool))
        objects = sample_scene(spec, rng)
        yield spec, objects, render_scene(objects)


def answer_in_batches(answer: Callable, images: list[np.ndarray], questions: list[str], batch_size: int = 256) -> list:
    """``answer(images, questions)`` (e.g. ``pipe.understand``) over batches of ``batch_size``, one result per batch."""
    return [
        answer(np.stack(images[start : start + batch_size]), questions[start : start + batch_size])
        for start in range(0, len(images), batch_size)
    ]


def understanding_accuracy(pipe: UnifiedPipeline, num_scenes: int = 200, seed: int = 1) -> dict[str, float]:
    """Accuracy of the model's answers on freshly rendered scenes of held-out prompts, per question kind."""
    rng = random.Random(seed)
    images, questions, answers = [], [], []
    for spec, objects, image in rendered_heldout_scenes(num_scenes, rng):
        for question, answer in scene_questions(objects, spec, rng):
            images.append(image)
            questions.append(question)
            answers.append(answer)
    predicted = sum(answer_in_batches(pipe.understand, images, questions), [])
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
    images, questions, occupied = [], [], []
    for _, objects, image in rendered_heldout_scenes(num_scenes, random.Random(seed)):
        for region in REGIONS:
            images.append(image)
            questions.append(question_in_region(None, region))
            occupied.append(any(obj.region == region for obj in objects))
    probabilities = torch.cat([batch.cpu() for batch in answer_in_batches(pipe.yes_probability, images, questions)])
    return ranking_auc(probabilities.numpy(), np.array(occupied))


def verification_scores(
    pipe: UnifiedPipeline, num_scenes: int = 200, seed: int = 1
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The judge's ``P(yes)`` on the questions of :func:`judge_verification`: ``(probability, truth, kinds)``,
    ``(num_scenes, 4)`` arrays (columns: own prompt, hard negative, occupancy, noun in region) and each scene's
    kind of hard negative."""
    rng = random.Random(f"verification-{seed}")
    images, questions, labels, kinds = [], [], [], []
    for spec, objects, image in rendered_heldout_scenes(num_scenes, rng):
        negative = perturb_prompt(spec, rng)
        kinds.append(_perturbation_kind(spec, negative))
        pairs = [(question_about_prompt(spec.text()), True), (question_about_prompt(negative.text()), False)]
        pairs += [(question, answer == "yes") for question, answer in region_questions(objects, rng)]
        for question, label in pairs:
            images.append(image)
            questions.append(question)
            labels.append(label)
    probability = torch.cat([batch.cpu() for batch in answer_in_batches(pipe.yes_probability, images, questions)])
    return probability.numpy().reshape(num_scenes, 4), np.array(labels).reshape(num_scenes, 4), kinds


def whole_prompt_threshold(probability: np.ndarray, truth: np.ndarray) -> float:
    """The ``P(yes)`` threshold (grid 0.05..0.95) with the best whole-prompt accuracy on these scenes
    (:func:`verification_scores` of a validation seed); the lowest such threshold on ties."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    accuracy = [((probability[:, :2] > t) == truth[:, :2]).mean() for t in grid]
    return float(grid[int(np.argmax(accuracy))])


def judge_verification(
    pipe: UnifiedPipeline, num_scenes: int = 200, seed: int = 1, threshold: float = 0.5
) -> dict[str, float]:
    """The issue's judge metric on real images: freshly rendered scenes of held-out prompts, each asked
    ``"does the image show {its prompt}?"`` (yes) and the same about a hard negative
    (:func:`~selfgen.data.scenes.perturb_prompt`: one colour, shape, count or relation changed; no), and the two region questions
    about a random quadrant (occupancy and noun-in-region, :func:`~selfgen.data.scenes.region_questions`).

    Returns the whole-prompt accuracy (``P(yes) > threshold``; a threshold other than 0.5 is chosen on another
    ``seed``'s scenes, :func:`whole_prompt_threshold`) and the AUC of ``P(yes)`` (positive against
    negative pairs; 0.5 is chance), the region accuracy (``P(yes) > 0.5``), and per kind of hard negative (``colour``,
    ``shape``, ``count``, ``relation``) ``paired_auc_{kind}``: how often the scene's own prompt scores above
    its negative (``num_{kind}`` scenes); each with a 95% bootstrap interval over scenes (``*_low``, ``*_high``)."""
    per_scene, truth, kinds = verification_scores(pipe, num_scenes, seed)
    right = (per_scene > np.array([threshold, threshold, 0.5, 0.5])) == truth
    statistics = {
        "whole_prompt_accuracy": lambda rows: float(rows[:, 0:2].mean()),
        "whole_prompt_auc": lambda rows: ranking_auc(rows[:, 4:6].ravel(), rows[:, 8:10].ravel().astype(bool)),
        "region_accuracy": lambda rows: float(rows[:, 2:4].mean()),
    }
    rows = np.concatenate([right, per_scene, truth], axis=1).astype(np.float64)
    results = {}
    for name, statistic in statistics.items():
        results[name] = statistic(rows)
        results[f"{name}_low"], results[f"{name}_high"] = bootstrap_interval(statistic, rows, num_resamples=500)
    for kind in sorted(set(kinds)):
        name, chosen = f"paired_auc_{kind}", rows[np.array(kinds) == kind]
        results[name], results[f"num_{kind}"] = _paired_auc(chosen), len(chosen)
        if len(chosen) > 1:
            results[f"{name}_low"], results[f"{name}_high"] = bootstrap_interval(_paired_auc, chosen, num_resamples=500)
    return results


def _paired_auc(rows: np.ndarray) -> float:
    """How often a scene's own prompt gets a higher ``P(yes)`` than its hard negative (ties count half)."""
    positive, negative = rows[:, 4], rows[:, 5]
    return float((positive > negative).mean() + 0.5 * (positive == negative).mean())


def _perturbation_kind(spec: PromptSpec, negative: PromptSpec) -> str:
    """Which attribute :func:`~selfgen.data.scenes.perturb_prompt` changed: colour, shape, count or relation."""
    if spec.relation != negative.relation:
        return "relation"
    before, after = next((a, b) for a, b in zip(spec.objects, negative.objects) if a != b)
    return "colour" if before.colour != after.colour else "shape" if before.shape != after.shape else "count"


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
    save_image_grid(images, output_dir / "samples.png", tile_labels=prompts, title=f"one sample per prompt (seed {seed})")
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
    prompt's accuracy, for paired comparisons of two models on the same prompts and noise), the judge's
    :func:`judge_verification` on rendered held-out scenes, and the sample grid."""
    pipe = UnifiedPipeline.from_pretrained(model_path)
    pipe.set_progress_bar_config(disable=True)
    prompts = heldout_prompts(prompts_per_category, seed, split)
    generation, images, correct = compositional_accuracy(
        pipe,
        prompts,
        seed,
        samples_per_prompt,
        guidance_scale=guidance_scale,
        num_inference_steps=num_inference_steps,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    save_image_grid(
        images[::samples_per_prompt], output_dir / "samples.png", tile_labels=prompts,
        title=f"{split} prompts, one sample each (seed {seed}, {num_inference_steps} steps, guidance {guidance_scale})",
    )
    metrics = {
        "compositional_accuracy": generation,
        "per_prompt_accuracy": per_prompt_accuracy(correct, prompts, samples_per_prompt),
        "understanding_accuracy": understanding_accuracy(pipe, num_scenes, seed + 1),
        "understanding_occupancy_auc": occupancy_auc(pipe, num_scenes, seed + 1),
        "judge_verification": judge_verification(pipe, num_scenes, seed + 1),
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
