"""Tora2 training on synthetic multi-entity sprite videos (or the user's clips), plus generation and evaluation.

``selfgen train tora2 --config configs/tora2_sprites.yaml`` rebuilds ``assets/tora2-sprites``. The objective
(Tora2, Sec. 3) is the diffusion loss plus the motion-appearance contrastive term:

``L = E ||x0_theta(x_sigma, sigma, c) - x0||^2 + lambda * InfoNCE(motion_k -> appearance_k)``

with ``x_sigma = (1 - sigma) x0 + sigma eps``, ``sigma ~ U(0, 1)`` (rectified flow; the model predicts the clean
video and sampling uses ``v = (x_sigma - x0_theta) / sigma``, see ``models/tora.py``), ``c`` the prompt, the
entities' trajectories, descriptions and reference images, and InfoNCE over all entities of the batch:
entity ``k``'s motion embedding (the video features along its path) must pick its own appearance
embedding among every other entity's (the other entities of its video included). ``mode`` selects the
ablations (``tora1``: trajectory only; ``no_gate``: entity tokens concatenated, no gated attention) and
``contrastive_weight: 0`` drops the contrastive term. ``loss_space: v`` scores the same x-prediction as a
velocity, ``||x0_theta - x0||^2 / max(sigma, 0.05)^2`` (Li & He 2025), see :class:`Tora2Objective`.

``selfgen eval tora2`` generates videos for held-out appearances and paths and scores them with the
template-matching tracker of :mod:`selfgen.eval.tracking` (no shared weights); ``selfgen generate tora2
--out clip.mp4`` writes an MP4 and a GIF with the requested paths drawn on a side-by-side copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils import export_to_gif
from torch import nn
from torch.utils.data import Dataset

from ..data.sprites import SPRITE_RADIUS, SpriteVideoDataset, caption_tokenizer
from ..data.video import VideoFolderDataset
from ..eval.statistics import mean_difference
from ..eval.tracking import draw_trajectories, evaluate_tracking, path_binding, retrieval_top1, shuffled_partners
from ..models.tora import Tora2Transformer
from ..pipelines.tora import Tora2Pipeline, entity_conditions
from .config import TrainingConfig
from .losses import info_nce
from .registry import Method
from .trainer import Objective, TrainResult, Trainer


@dataclass
class Tora2Config(TrainingConfig):
    mode: str = "tora2"  # "tora2" | "tora1" | "no_gate" | "dit" (no trajectory or appearance path)
    entity_binding: str = "positional"  # "positional" (per temporal token, sin-cos position) | "pooled" (one per entity)
    dim: int = 96
    num_layers: int = 4
    num_heads: int = 4
    patch_size: int = 4
    temporal_patch_size: int = 2
    mlp_ratio: float = 2.0
    motion_dim: int = 32
    num_appearance_tokens: int = 4
    refiner_width: int = 0  # > 0: full-resolution conv head after the patch head (models/tora.py::PixelRefiner)
    entity_routing: bool = False  # also add each entity's bound tokens where it is (Tora2Transformer.routed_entities)
    reference_canvas: bool = False  # also feed each reference pasted along its path (models/tora.py::reference_canvas)
    canvas_compositing: str = "sum"  # overlapping entities on the canvas: "sum" of references | "over" (later in front)
    contrastive_weight: float = 0.1
    contrastive_temperature: float = 0.1
    loss_space: str = "x"  # "x": ||x0_hat - x0||^2; "v": the same prediction scored as a velocity (JiT's x-pred + v-loss)
    num_videos: int = 50000  # procedural sprite videos in the training set
    num_frames: int = 8
    size: int = 32
    max_entities: int = 3
    max_text_length: int = 24  # prompt tokens (longer captions are truncated)
    max_entity_text_length: int = 8  # tokens of one entity's description
    text_layers: int = 1  # BERT layers of the text encoder
    clip_stride: int = 1  # users' clips: source frames between sampled frames
    clip_start: str = "random"  # users' clips: "random" start in every epoch, or "first" frames
    attention_backend: str = "sdpa"  # "math" trains faster on CPU at these sizes
    on_error: str = "raise"  # an undecodable clip under --data: "raise" stops, "skip" leaves it out (logged, counted)


# ----------------------------------------------------------------------------- data


class ClipEntityDataset(Dataset):
    """The user's clips (:class:`~selfgen.data.video.VideoFolderDataset` with ``caption``, ``trajectories``
    and ``reference_images`` in ``metadata.jsonl``) as sprite-style items: ``video`` in ``[0, 1]``, ``prompt``
    and per entity its reference image, its trajectory normalised by the clip size and a per-frame
    ``visibility`` (False where the point lies outside the crop; the trajectory is clamped to the border
    there and the model ignores it, see :meth:`Tora2Transformer.encode_trajectories`). Each item is a clip of
    ``num_frames`` frames ``frame_stride`` apart from a random start (``clip_start="random"``) or the first frames."""

    REQUIRED = ("caption", "trajectories", "reference_images")

    def __init__(
        self,
        root: str | Path,
        num_frames: int,
        size: int,
        frame_stride: int = 1,
        clip_start: str = "random",
        on_error: str = "raise",
    ) -> None:
        self.clips = VideoFolderDataset(
            root,
            num_frames=num_frames,
            frame_stride=frame_stride,
            resolution=size,
            clip_start=clip_start,
            on_error=on_error,
        )
        fields = self.clips.videos[0].metadata.fields
        missing = [name for name in self.REQUIRED if name not in fields]
        if missing:
            raise ValueError(f"{root}/metadata.jsonl must give {self.REQUIRED} for every clip; missing {missing}")
        self.size = size

    @property
    def captions(self) -> list[str]:
        return [video.metadata.fields["caption"] for video in self.clips.videos]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.clips[index]
        video = ((item["pixel_values"].permute(0, 2, 3, 1) + 1) / 2).numpy()
        points = item["trajectories"].numpy() / self.size
        visible = ((points >= 0) & (points < 1)).all(-1)
        entities = [
            {"trajectory": path.clip(0, 1), "visibility": seen, "reference_image": image}
            for path, seen, image in zip(points, visible, item["reference_images"])
        ]
        return {"video": video, "prompt": item["caption"], "entities": entities}


class Collate:
    """Sprite-style items -> model inputs via the pipeline's own :func:`entity_conditions` (same checks)."""

    def __init__(self, model_config: Any, tokenizer: Any) -> None:
        self.model_config = model_config
        self.tokenizer = tokenizer

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = entity_conditions(
            [example["prompt"] for example in examples],
            [example["entities"] for example in examples],
            self.model_config,
            self.tokenizer,
        )
        video = torch.from_numpy(np.stack([example["video"] for example in examples])).float()
        batch["video"] = video.permute(0, 1, 4, 2, 3) * 2 - 1
        return batch


# ----------------------------------------------------------------------------- objective


def noisy_video(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_sigma, sigma)`` for clean videos ``(B, F, C, H, W)``, ``sigma ~ U(0, 1)``."""
    noise = torch.randn_like(video)
    sigmas = torch.rand(video.shape[0], device=video.device)
    expanded = sigmas.view(-1, *[1] * (video.ndim - 1))
    return (1 - expanded) * video + expanded * noise, sigmas


def contrastive_loss(
    motion: torch.Tensor, appearance: torch.Tensor, entity_mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Tora2's contrastive term: InfoNCE from each valid entity's motion embedding to its own appearance
    embedding, every other entity of the batch a negative."""
    return info_nce(motion[entity_mask], appearance[entity_mask], temperature)


LOSS_SPACES = ("x", "v")
MIN_LOSS_SIGMA = 0.05


class Tora2Objective(Objective):
    """Rectified-flow (x-prediction) loss + ``contrastive_weight`` x motion-appearance InfoNCE (module docstring).

    ``loss_space="x"`` scores the clean-video prediction directly, ``||x0_hat - x0||^2``; ``"v"`` scores the
    velocity it implies, ``||(x_sigma - x0_hat) / sigma - (x_sigma - x0) / sigma||^2 = ||x0_hat - x0||^2 / sigma^2``
    with ``sigma`` clipped at ``MIN_LOSS_SIGMA`` (Li & He 2025's x-prediction + v-loss), which weights the
    low-noise end, where the model must reproduce fine detail, far more.
    """

    def __init__(self, contrastive_weight: float, temperature: float, loss_space: str = "x") -> None:
        if loss_space not in LOSS_SPACES:
            raise ValueError(f"loss_space must be one of {LOSS_SPACES}, got {loss_space!r}")
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.loss_space = loss_space

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        noisy, sigmas = noisy_video(batch["video"])
        output = model(
            sample=noisy,
            timestep=sigmas * 1000,
            prompt_ids=batch["prompt_ids"],
            trajectories=batch["trajectories"],
            entity_mask=batch["entity_mask"],
            reference_images=batch["reference_images"],
            entity_ids=batch["entity_ids"],
            visibility=batch["visibility"],
        )
        squared_error = (output.sample.float() - batch["video"].float()).pow(2).flatten(1).mean(1)
        if self.loss_space == "v":
            diffusion = (squared_error / sigmas.clamp_min(MIN_LOSS_SIGMA).pow(2)).mean()
        else:
            diffusion = squared_error.mean()
        logs = {"loss_diffusion": diffusion.item(), "loss_x0": squared_error.mean().item()}
        loss = diffusion
        if output.motion_embeddings is not None:
            contrastive = contrastive_loss(
                output.motion_embeddings, output.appearance_embeddings, batch["entity_mask"], self.temperature
            )
            logs["loss_contrastive"] = contrastive.item()
            if self.contrastive_weight > 0:
                loss = loss + self.contrastive_weight * contrastive
        return loss, logs


# ----------------------------------------------------------------------------- training


def build_model(config: Tora2Config, tokenizer: Any) -> Tora2Transformer:
    return Tora2Transformer(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        max_text_length=config.max_text_length,
        max_entity_text_length=config.max_entity_text_length,
        text_layers=config.text_layers,
        sample_size=config.size,
        num_frames=config.num_frames,
        patch_size=config.patch_size,
        temporal_patch_size=config.temporal_patch_size,
        dim=config.dim,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        motion_dim=config.motion_dim,
        num_appearance_tokens=config.num_appearance_tokens,
        max_entities=config.max_entities,
        mode=config.mode,
        entity_binding=config.entity_binding,
        refiner_width=config.refiner_width,
        entity_routing=config.entity_routing,
        reference_canvas=config.reference_canvas,
        canvas_compositing=config.canvas_compositing,
    )


def build_pipeline(model: Tora2Transformer, tokenizer: Any) -> Tora2Pipeline:
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    return Tora2Pipeline(transformer=model, scheduler=scheduler, tokenizer=tokenizer)


def train(config: Tora2Config) -> TrainResult:
    set_seed(config.seed)
    if config.mode in ("tora1", "dit") and config.contrastive_weight > 0:
        raise ValueError(f"mode {config.mode!r} has no appearance embeddings: set contrastive_weight: 0")
    if config.data:
        dataset = ClipEntityDataset(
            config.data, config.num_frames, config.size, config.clip_stride, config.clip_start, config.on_error
        )
        tokenizer = caption_tokenizer(dataset.captions)
    else:
        dataset = SpriteVideoDataset(config.num_videos, config.num_frames, config.size, config.max_entities, config.seed)
        tokenizer = caption_tokenizer()
    model = build_model(config, tokenizer)
    model.set_attention_backend(config.attention_backend)
    objective = Tora2Objective(config.contrastive_weight, config.contrastive_temperature, config.loss_space)

    def export_pipeline(module: nn.Module, directory: Path) -> None:
        build_pipeline(module, tokenizer).save_pretrained(directory)

    return Trainer(
        model, objective, dataset, config, export_fn=export_pipeline, collate_fn=Collate(model.config, tokenizer)
    ).train()


# ----------------------------------------------------------------------------- generation and evaluation


SUBSETS = ("all", "entangled")
ENTANGLED_DISTANCE = 2 * SPRITE_RADIUS / 32  # one sprite diameter (9 pixels at 32x32), normalised


def heldout_videos(num_videos: int, seed: int = 1, max_entities: int = 3) -> SpriteVideoDataset:
    """Evaluation items: held-out appearances on fresh paths (a seed the training set does not use)."""
    return SpriteVideoDataset(num_videos, max_entities=max_entities, seed=10_000 + seed, split="heldout")


def is_entangled(item: dict, distance: float = ENTANGLED_DISTANCE) -> bool:
    """Whether two of ``item``'s entities stay within ``distance`` (normalised) of each other in every frame:
    their sprites touch or overlap throughout, so where each reference sits does not by itself tell them apart."""
    paths = [np.asarray(entity["trajectory"], np.float32) for entity in item["entities"]]
    return any(
        bool((np.linalg.norm(first - second, axis=-1) < distance).all())
        for index, first in enumerate(paths)
        for second in paths[index + 1 :]
    )


def evaluation_videos(num_videos: int, seed: int = 1, max_entities: int = 3, subset: str = "all") -> list[dict]:
    """The first ``num_videos`` items of :func:`heldout_videos` (``subset="all"``), or the first ``num_videos``
    of its stream that are :func:`is_entangled` (``"entangled"``, the hard set of docs/tora2.md, pass 7)."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    if subset == "all":
        return list(heldout_videos(num_videos, seed, max_entities))
    stream = heldout_videos(1_000_000, seed, max_entities)
    items: list[dict] = []
    for index in range(len(stream)):
        if len(items) == num_videos:
            break
        item = stream[index]
        if is_entangled(item):
            items.append(item)
    return items


def generate_for(pipe: Tora2Pipeline, items: list[dict], num_inference_steps: int, seed: int, batch_size: int = 16):
    """Frames ``(N, F, H, W, 3)`` generated for the prompts and entities of ``items``, seeded per batch."""
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        outputs.append(
            pipe(
                prompt=[item["prompt"] for item in chunk],
                entities=[item["entities"] for item in chunk],
                num_inference_steps=num_inference_steps,
                generator=generator,
                output_type="np",
            ).frames
        )
    return np.concatenate(outputs)


def write_clip(frames: np.ndarray, entities: list[dict], out: Path, scale: int = 8, fps: int = 4) -> dict[str, str]:
    """``frames (F, H, W, 3)`` side by side with a copy showing the requested paths, as MP4 and GIF."""
    annotated = draw_trajectories(frames, [entity["trajectory"] for entity in entities], scale)
    panels = np.concatenate([frames.repeat(scale, axis=1).repeat(scale, axis=2), annotated], axis=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    mp4, gif = out.with_suffix(".mp4"), out.with_suffix(".gif")
    export_video(list(panels), mp4, fps)
    export_to_gif([_to_pil(panel) for panel in panels], str(gif), fps=fps)
    return {"mp4": str(mp4), "gif": str(gif)}


def _to_pil(frame: np.ndarray):
    from PIL import Image

    return Image.fromarray((frame * 255).round().astype(np.uint8))


def export_video(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """diffusers' ``export_to_video`` (needs imageio + imageio-ffmpeg); PyAV's H.264 encoder when they are absent."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        import av

        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "12"})
            stream.height, stream.width, stream.pix_fmt = frames[0].shape[0], frames[0].shape[1], "yuv420p"
            for frame in frames:
                rgb = (frame * 255).round().astype(np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode())
        return
    from diffusers.utils import export_to_video

    export_to_video(frames, str(path), fps=fps)


def generate(
    model_path: str,
    output_dir: Path,
    index: int = 0,
    num_inference_steps: int = 30,
    seed: int = 0,
) -> dict:
    """Generate the held-out evaluation item ``index`` (its prompt, paths and reference images) and write an
    MP4 and the matching GIF (generated | generated with the requested paths drawn): ``output_dir`` itself
    when it ends in ``.mp4`` (``selfgen generate tora2 --model ... --out clip.mp4``), else ``output_dir/clip.mp4``."""
    pipe = Tora2Pipeline.from_pretrained(model_path)
    item = heldout_videos(index + 1, seed, pipe.transformer.config.max_entities)[index]
    frames = generate_for(pipe, [item], num_inference_steps, seed)[0]
    out_path = output_dir if output_dir.suffix == ".mp4" else output_dir / "clip.mp4"
    files = write_clip(frames, item["entities"], out_path)
    return {"prompt": item["prompt"], **files}


def with_appearances(item: dict, donors: list[dict]) -> dict:
    """``item`` with its entities' reference images and descriptions taken from ``donors`` (paths kept) and
    the prompt rebuilt from the new descriptions."""
    entities = [
        dict(entity, reference_image=donor["reference_image"], description=donor["description"])
        for entity, donor in zip(item["entities"], donors)
    ]
    prompt = " and ".join(f"a {entity['description']}" for entity in entities)
    return dict(item, entities=entities, prompt=prompt)


def shuffled_reference_items(items: list[dict], seed: int) -> tuple[list[int], list[dict]]:
    """The shuffled-reference control's inputs: each video's paths with the appearances of a
    :func:`~selfgen.eval.tracking.shuffled_partners` video (indices of the videos that have one, and the items)."""
    kept, shuffled = [], []
    for index, partner in enumerate(shuffled_partners(items, seed)):
        if partner is not None:
            kept.append(index)
            shuffled.append(with_appearances(items[index], items[partner]["entities"]))
    return kept, shuffled


@torch.no_grad()
def sigma_one_probe(pipe: Tora2Pipeline, items: list[dict], seed: int, batch_size: int = 16) -> dict[str, Any]:
    """Probes at ``sigma = 1`` (pure noise in, where the layout is decided): :func:`path_binding` of the clean
    estimate ``x0_hat`` (is entity ``k``'s colour on ``k``'s path?), the same with each multi-entity video's
    appearances rotated by one entity (a model that binds follows the references, so the score falls below 0.5),
    and top-1 motion -> appearance retrieval of the contrastive embeddings over all entities (chance ``1/N``)."""
    rotated = [with_appearances(item, item["entities"][1:] + item["entities"][:1]) for item in items]
    estimates: dict[str, list[np.ndarray]] = {"own": [], "rotated": []}
    motion, appearance = [], []
    generator = torch.Generator().manual_seed(seed)
    config = pipe.transformer.config
    for start in range(0, len(items), batch_size):
        shape = (len(items[start : start + batch_size]), config.num_frames, config.in_channels, config.sample_size, config.sample_size)
        noise = torch.randn(shape, generator=generator).to(pipe.device, pipe.transformer.dtype)
        for name, source in (("own", items), ("rotated", rotated)):
            chunk = source[start : start + batch_size]
            conditions = pipe.encode_conditions([item["prompt"] for item in chunk], [item["entities"] for item in chunk])
            timestep = torch.full((len(chunk),), float(pipe.scheduler.config.num_train_timesteps), device=pipe.device)
            output = pipe.transformer(sample=noise, timestep=timestep, **conditions)
            estimates[name].append(pipe.postprocess_video(output.sample, "np"))
            if name == "own" and output.motion_embeddings is not None:
                mask = conditions["entity_mask"]
                motion.append(output.motion_embeddings[mask].float().cpu().numpy())
                appearance.append(output.appearance_embeddings[mask].float().cpu().numpy())
    own = path_binding(np.concatenate(estimates["own"]), items)
    rotated_binding = path_binding(np.concatenate(estimates["rotated"]), items)
    probe = {
        "binding": own["binding"],
        "binding_se": own["binding_se"],
        "binding_rotated_references": rotated_binding["binding"],
        "binding_rotated_references_se": rotated_binding["binding_se"],
        "per_video": {"binding": own["per_video"], "binding_rotated_references": rotated_binding["per_video"]},
    }
    if motion:
        queries = np.concatenate(motion)
        probe["retrieval_top1"] = retrieval_top1(queries, np.concatenate(appearance))
        probe["retrieval_chance"] = 1 / len(queries)
    return probe


PAIRED_KEYS = {
    ("generated", "trajectory_error"): "trajectory_error",
    ("generated", "appearance_similarity"): "appearance_similarity",
    ("generated", "swapped"): "swap_rate",
    ("sigma_one_probe", "binding"): "binding",
    ("sigma_one_probe", "binding_rotated_references"): "binding_rotated_references",
}


def paired_differences(per_video: dict, reference: dict) -> dict[str, dict[str, float]]:
    """``this - reference`` per metric, paired by video (only videos where both are finite), with the standard
    error of the paired differences: the per-video values of two ``selfgen eval tora2`` runs on the same videos."""
    differences = {}
    for (row, key), name in PAIRED_KEYS.items():
        if key not in reference.get(row, {}):
            raise ValueError(f"paired_with: the file has no {row}.{key}; re-evaluate that model with this version")
        mine, theirs = np.asarray(per_video[row][key], float), np.asarray(reference[row][key], float)
        if mine.shape != theirs.shape:
            raise ValueError(
                f"paired_with: {row}.{key} has {theirs.size} videos, this run {mine.size}; evaluate both with the "
                "same num_videos and seed"
            )
        both = np.isfinite(mine) & np.isfinite(theirs)
        mean, error = mean_difference(theirs[both], mine[both])
        differences[name] = {"difference": mean, "difference_se": error, "num_videos": int(both.sum())}
    return differences


def evaluate(
    model_path: str,
    output_dir: Path,
    num_videos: int = 48,
    num_inference_steps: int = 30,
    seed: int = 0,
    paired_with: str | None = None,
    subset: str = "all",
) -> dict:
    """Generate ``num_videos`` held-out videos, track every entity with the template tracker and probe the
    model at ``sigma = 1``.

    Rows: ``generated`` (the model); ``shuffled_control`` (the same tracks scored against the paths of another
    video with at least as many entities: path-blind tracks); ``shuffled_references`` (a second sample generated
    with every video's appearances (references and descriptions) taken from another video, tracked with the
    true references: what appearance similarity is without the right reference); ``ground_truth`` (the tracker on
    the real videos: its floor); ``sigma_one_probe`` (:func:`sigma_one_probe`). Per-video values go to
    ``output_dir/per_video.json``; ``paired_with`` (another run's ``per_video.json`` on the same videos) adds
    ``paired_differences``, this model minus that one, paired by video. ``subset="entangled"`` evaluates the hard
    set instead (:func:`evaluation_videos`: entities whose sprites touch or overlap in every frame)."""
    pipe = Tora2Pipeline.from_pretrained(model_path)
    items = evaluation_videos(num_videos, seed, pipe.transformer.config.max_entities, subset)
    frames = generate_for(pipe, items, num_inference_steps, seed)
    kept, shuffled_items = shuffled_reference_items(items, seed)
    shuffled_frames = generate_for(pipe, shuffled_items, num_inference_steps, seed)
    rows = {
        "generated": evaluate_tracking(frames, items),
        "shuffled_control": evaluate_tracking(frames, items, shuffle_seed=seed),
        "shuffled_references": evaluate_tracking(shuffled_frames, [items[index] for index in kept]),
        "ground_truth": evaluate_tracking(np.stack([item["video"] for item in items]), items),
        "sigma_one_probe": sigma_one_probe(pipe, items, seed),
    }
    per_video = {name: row.pop("per_video") for name, row in rows.items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "per_video.json").write_text(json.dumps(per_video))
    generated_similarity = np.asarray(per_video["generated"]["appearance_similarity"])[kept]
    difference, error = mean_difference(per_video["shuffled_references"]["appearance_similarity"], generated_similarity)
    metrics = {
        **rows,
        "appearance_gain_over_shuffled_references": {"difference": difference, "difference_se": error, "num_videos": len(kept)},
        "num_videos": num_videos,
        "subset": subset,
        "num_inference_steps": num_inference_steps,
        "mode": pipe.transformer.config.mode,
    }
    if paired_with is not None:
        metrics["paired_differences"] = paired_differences(per_video, json.loads(Path(paired_with).read_text()))
    write_clip(frames[0], items[0]["entities"], output_dir / "sample.mp4")
    return metrics


def demo(asset_dir: Path, output_dir: Path) -> dict:
    """One held-out clip (MP4 + GIF) and tracking metrics on 4 held-out videos, 10 Euler steps."""
    return evaluate(str(asset_dir), output_dir, num_videos=4, num_inference_steps=10)


METHOD = Method(
    name="tora2",
    summary="Tora2: multi-entity motion + appearance customised video DiT (trajectory MGF, gated entity attention)",
    config_class=Tora2Config,
    train=train,
    generate=generate,
    evaluate=evaluate,
    demo=demo,
    demo_asset="tora2-sprites",
)
