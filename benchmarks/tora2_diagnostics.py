"""Why Tora2 samples look the way they do: three cheap probes of a trained model (docs/tora2.md, pass 6).

    python benchmarks/tora2_diagnostics.py denoise <model> [--num_videos 16]
        x0_hat from x_sigma = (1 - sigma) x0 + sigma eps of real held-out videos at fixed sigma: MSE against x0
        (returning the input scores sigma^2 E|eps - x0|^2, printed as `identity`).
    python benchmarks/tora2_diagnostics.py shape <model> [--num_videos 16]
        How far the sigma = 1 clean estimate moves, in a 9x9 box on each entity's path, when its reference image is
        re-drawn with another SHAPE (same colour and texture) or another COLOUR (same shape and texture); the
        descriptions are unchanged, so only the reference image differs. `away` is the change at the pixels outside
        every entity's box (a change that only tints the frame moves them as much); `real` is the same change on
        the references themselves (what a model that draws the reference would move).
    python benchmarks/tora2_diagnostics.py knockout <model> [--num_videos 48] [--subset entangled]
        What each zero-initialised path carries in the trained model: its parameters set back to zero at inference
        (the gated attention's tanh gates, the routing projections, the canvas inputs), then the sigma = 1 binding
        probe (own and rotated references, as in `selfgen eval tora2`) and the x0 MSE at sigma = 0.5 of real videos.
    python benchmarks/tora2_diagnostics.py grid <out.png> <label>=<model> ... [--num_videos 3] [--steps 20]
        Real videos and each model's samples (20 Euler steps, seed 0), one row each, frames as columns.
    python benchmarks/tora2_diagnostics.py occlusion <label>=<model> ... [--num_videos 48] [--subset entangled]
        Are overlapping sprites drawn one in front (the renderer draws each later entity in front) or blended? In
        every frame, where two entities' sprites overlap (the interior of the overlap, at least 3 pixels; entity
        colours at least 0.3 apart), the mean colour of the sample there is projected on the segment from the
        front entity's colour (0) to the back one's (1): `back share`. A region counts as `front` below 0.25,
        `blended` in [0.25, 0.75], `back` above. Mean over each video's regions, then over videos; the real videos
        are the first row (their texture sets the floor), and each model is paired by video with the first model.

<model> is an exported pipeline folder or a training checkpoint folder (its EMA weights), optionally followed by
`?canvas_compositing=over` (the trained weights run with the other canvas rule, models/tora.py). Videos are the
selection set `heldout_videos(n, seed=0)`, never the test seed; `--subset entangled` takes the selection set's
videos whose sprites touch or overlap in every frame (`selfgen.train.tora.evaluation_videos`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from selfgen import Tora2Pipeline
from scipy.ndimage import binary_erosion

from selfgen.data.sprites import COLORS, SHAPES, SPRITE_RADIUS, caption_tokenizer, reference_image, shape_mask
from selfgen.eval.plots import save_image_grid
from selfgen.eval.statistics import mean_difference, standard_error
from selfgen.eval.tracking import path_binding, reference_colour
from selfgen.train.tora import SUBSETS, Tora2Config, build_model, build_pipeline, evaluation_videos, generate_for, with_appearances


def load(path: str) -> Tora2Pipeline:
    """``path`` may end in ``?canvas_compositing=over``: the trained model run with the other canvas rule."""
    path, _, override = path.partition("?")
    folder = Path(path)
    if (folder / "model_index.json").exists():
        pipe = Tora2Pipeline.from_pretrained(folder)
    else:
        state = json.loads((folder / "trainer_state.json").read_text())
        fields = {k: v for k, v in state["config"].items() if k in Tora2Config.__dataclass_fields__}
        tokenizer = caption_tokenizer()
        model = build_model(Tora2Config(**fields), tokenizer)
        shadow = torch.load(folder / "custom_checkpoint_0.pkl", map_location="cpu", weights_only=True)["shadow_params"]
        with torch.no_grad():
            for param, value in zip(model.parameters(), shadow):
                param.copy_(value)
        pipe = build_pipeline(model.eval(), tokenizer)
    if override:
        key, _, value = override.partition("=")
        if key != "canvas_compositing":
            raise ValueError(f"only ?canvas_compositing=<sum|over> may follow a model path, got {override!r}")
        pipe.transformer.register_to_config(canvas_compositing=value)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def clean_videos(items: list[dict]) -> torch.Tensor:
    return torch.from_numpy(np.stack([item["video"] for item in items])).permute(0, 1, 4, 2, 3).float() * 2 - 1


@torch.no_grad()
def predict(pipe: Tora2Pipeline, items: list[dict], noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    conditions = pipe.encode_conditions([item["prompt"] for item in items], [item["entities"] for item in items])
    timestep = torch.full((len(items),), 1000.0 * sigma)
    return pipe.transformer(sample=noisy, timestep=timestep, **conditions).sample


def denoise(pipe: Tora2Pipeline, items: list[dict]) -> None:
    video = clean_videos(items)
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(0))
    print("| sigma | x0 MSE | identity (return x_sigma) |\n| --- | --- | --- |")
    for sigma in (0.05, 0.2, 0.5, 0.8):
        noisy = (1 - sigma) * video + sigma * noise
        error = (predict(pipe, items, noisy, sigma) - video).pow(2).mean().item()
        print(f"| {sigma} | {error:.4f} | {(noisy - video).pow(2).mean().item():.4f} |")


def redrawn(description: str, change: str) -> np.ndarray:
    colour, texture, shape = description.split()
    if change == "shape":
        shape = SHAPES[(SHAPES.index(shape) + 3) % len(SHAPES)]
    else:
        names = list(COLORS)
        colour = names[(names.index(colour) + len(names) // 2) % len(names)]
    return reference_image((colour, texture, shape))


def shape(pipe: Tora2Pipeline, items: list[dict]) -> None:
    video = clean_videos(items)
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(0))
    own = predict(pipe, items, noise, 1.0)
    size = pipe.transformer.config.sample_size
    print("| reference re-drawn with another | model: mean abs change near the entity | away from every entity | "
          "real references |\n| --- | --- | --- | --- |")
    for change in ("shape", "colour"):
        changed_items = [
            dict(item, entities=[dict(e, reference_image=redrawn(e["description"], change)) for e in item["entities"]])
            for item in items
        ]
        changed = predict(pipe, changed_items, noise, 1.0)
        moved, away, real = [], [], []
        for index, item in enumerate(items):
            near = np.zeros((len(item["video"]), size, size), bool)  # within the 9x9 box of some entity
            for entity in item["entities"]:
                reference = reference_image(tuple(entity["description"].split()))
                real.append(2 * np.abs(redrawn(entity["description"], change) - reference)[4:13, 4:13].mean())
                for frame, (x, y) in enumerate(entity["trajectory"] * size):
                    rows, columns = slice(max(int(y) - 4, 0), int(y) + 5), slice(max(int(x) - 4, 0), int(x) + 5)
                    moved.append((changed - own)[index, frame, :, rows, columns].abs().mean().item())
                    near[frame, rows, columns] = True
            # a change that only tints the whole frame moves these pixels as much as the entity's own
            away.append((changed - own)[index].abs().mean(1)[torch.from_numpy(~near)].mean().item())
        print(f"| {change} | {np.mean(moved):.4f} ± {np.std(moved) / np.sqrt(len(moved)):.4f} | "
              f"{np.mean(away):.4f} ± {np.std(away) / np.sqrt(len(away)):.4f} | {np.mean(real):.4f} |")


KNOCKOUTS = {
    "gate": lambda name: name.endswith("gated_attn.alpha"),
    "routing": lambda name: ".router." in name,
    "canvas": lambda name: name.startswith("canvas_embed."),
}


def knocked_out(pipe: Tora2Pipeline, path: str) -> Tora2Pipeline:
    """The model with one zero-initialised path's parameters set back to zero (its value at initialisation)."""
    names = [name for name, _ in pipe.transformer.named_parameters() if KNOCKOUTS[path](name)]
    if not names:
        raise ValueError(f"this model has no {path} parameters to zero")
    with torch.no_grad():
        for name, param in pipe.transformer.named_parameters():
            if name in names:
                param.zero_()
        if path == "canvas":  # the refiner's input weights on the canvas channels
            channels = pipe.transformer.config.in_channels
            pipe.transformer.refiner.net[0].weight[:, 2 * channels + 1 :].zero_()
    return pipe


def knockout(model: str, items: list[dict]) -> None:
    video = clean_videos(items)
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(0))
    rotated = [with_appearances(item, item["entities"][1:] + item["entities"][:1]) for item in items]
    print("| path set to zero | binding at sigma = 1 | rotated references | x0 MSE at sigma 0.5 |\n| --- | --- | --- | --- |")
    for path in ("none", *KNOCKOUTS):
        pipe = load(model)
        if path != "none":
            try:
                knocked_out(pipe, path)
            except ValueError as error:
                print(f"| {path} | {error} | | |")
                continue
        own, turned = (
            path_binding(pipe.postprocess_video(predict(pipe, batch, noise, 1.0), "np"), items)
            for batch in (items, rotated)
        )
        error = (predict(pipe, items, 0.5 * video + 0.5 * noise, 0.5) - video).pow(2).mean().item()
        print(f"| {path} | {own['binding']:.3f} ± {own['binding_se']:.3f} | "
              f"{turned['binding']:.3f} ± {turned['binding_se']:.3f} | {error:.4f} |")


def grid(out: str, models: list[str], items: list[dict], steps: int) -> None:
    rows, labels = [np.stack([item["video"] for item in items])], ["real"]
    for spec in models:
        label, path = spec.split("=", 1)
        rows.append(generate_for(load(path), items, steps, 0))
        labels.append(label)
    frames = len(items[0]["video"])
    tiles = np.concatenate([np.stack([row[i] for row in rows]) for i in range(len(items))]).reshape(-1, *rows[0].shape[2:])
    row_labels = [f"{label} (video {i})" for i in range(len(items)) for label in labels]
    save_image_grid(tiles, out, columns=frames, scale=3, row_labels=row_labels,
                    title=f"Tora2, held-out appearances and paths (selection set), {steps} Euler steps")
    print(out, [item["prompt"] for item in items])


def overlap_regions(item: dict, size: int = 32, min_pixels: int = 3, min_contrast: float = 0.3) -> list[tuple]:
    """``(frame, interior mask, front colour, back colour)`` for every frame and pair of entities whose sprites
    overlap there (the later entity is in front, as the renderer draws them); only the overlap's interior (one
    pixel eroded) with at least ``min_pixels`` pixels, and pairs whose mean colours differ by ``min_contrast``."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    entities = item["entities"]
    colours = [reference_colour(entity["reference_image"]) for entity in entities]
    regions = []
    for frame in range(len(entities[0]["trajectory"])):
        masks = []
        for entity in entities:
            x, y = np.asarray(entity["trajectory"][frame]) * size
            masks.append(shape_mask(entity["description"].split()[2], xs - x, ys - y, SPRITE_RADIUS))
        for back in range(len(entities)):
            for front in range(back + 1, len(entities)):
                interior = binary_erosion(masks[back] & masks[front])
                if interior.sum() >= min_pixels and np.abs(colours[front] - colours[back]).max() >= min_contrast:
                    regions.append((frame, interior, colours[front], colours[back]))
    return regions


def back_shares(videos: np.ndarray, items: list[dict]) -> list[list[float]]:
    """Per video, per overlap region (:func:`overlap_regions`): the sample's mean colour there projected on the
    front -> back colour segment (0 = the front entity's colour, 1 = the back one's, 0.5 = an even blend)."""
    shares = []
    for video, item in zip(videos, items):
        values = []
        for frame, interior, front, back in overlap_regions(item, video.shape[1]):
            seen = video[frame][interior].mean(0)
            values.append(float(np.dot(seen - front, back - front) / np.dot(back - front, back - front)))
        shares.append(values)
    return shares


def occlusion(models: list[str], items: list[dict], steps: int) -> None:
    items = [item for item in items if overlap_regions(item)]
    print(f"{len(items)} videos with overlap regions ({sum(len(overlap_regions(item)) for item in items)} regions)")
    rows = [("real", np.stack([item["video"] for item in items]))]
    rows += [(spec.split("=", 1)[0], generate_for(load(spec.split("=", 1)[1]), items, steps, 0)) for spec in models]
    print("| frames | back share | front (< 0.25) | blended (0.25-0.75) | back (> 0.75) | minus the first model, paired |")
    print("| --- | --- | --- | --- | --- | --- |")
    first = None
    for label, videos in rows:
        shares = back_shares(videos, items)
        per_video = {
            "share": [np.mean(v) for v in shares],
            "front": [np.mean(np.array(v) < 0.25) for v in shares],
            "blended": [np.mean((np.array(v) >= 0.25) & (np.array(v) <= 0.75)) for v in shares],
            "back": [np.mean(np.array(v) > 0.75) for v in shares],
        }
        cells = [f"{np.mean(per_video[key]):.3f} ± {standard_error(per_video[key]):.3f}" for key in per_video]
        paired = ""
        if label != "real":
            if first is None:
                first = per_video
            else:
                paired = ", ".join(
                    "{} {:+.3f} ± {:.3f}".format(key, *mean_difference(first[key], per_video[key]))
                    for key in ("blended", "share")
                ) + f" ({len(items)} videos)"
        print(f"| {label} | " + " | ".join(cells) + f" | {paired} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=("denoise", "shape", "knockout", "grid", "occlusion"))
    parser.add_argument("args", nargs="+")
    parser.add_argument("--num_videos", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--subset", choices=SUBSETS, default="all")
    options = parser.parse_args()
    count = options.num_videos or (3 if options.probe == "grid" else 16)
    items = evaluation_videos(count, 0, 3, options.subset)
    if options.probe == "grid":
        grid(options.args[0], options.args[1:], items, options.steps)
    elif options.probe == "occlusion":
        occlusion(options.args, items, options.steps)
    elif options.probe == "knockout":
        knockout(options.args[0], items)
    else:
        (denoise if options.probe == "denoise" else shape)(load(options.args[0]), items)


if __name__ == "__main__":
    main()
