"""Reconstruction of the frozen scene autoencoder on VALIDATION renders (docs/srum.md, fifteenth pass).

Scenes of training-split prompts drawn with a seed no training run uses (``SceneRenders(n, seed=100)``; held-out
prompts are not drawn), encoded to normalised latents and decoded. Reports the per-pixel MSE (on [0, 1]), the rule
judge on the originals and on the reconstructions (do the shapes survive?) per category, and the latents' mean/std;
saves a grid of originals (odd tiles) next to their reconstructions (even tiles).

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/srum_autoencoder_reconstruction.py outputs/scene-autoencoder/pipeline \
        outputs/ae-reconstruction
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from selfgen.data.scenes import parse_prompt
from selfgen.eval.plots import save_image_grid
from selfgen.eval.scenes import judge_image
from selfgen.models.scene_autoencoder import decode_latents, encode_latents
from selfgen.train.scene_autoencoder import SceneRenders
from selfgen.train.unified import load_autoencoder

NUM_SCENES, SEED = 512, 100


def main() -> None:
    autoencoder, out = load_autoencoder(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    renders = SceneRenders(NUM_SCENES, seed=SEED)
    prompts = [renders.scenes.example(i)[0] for i in range(NUM_SCENES)]
    pixels = torch.stack([renders[i]["pixel_values"] for i in range(NUM_SCENES)])
    with torch.no_grad():
        latents = encode_latents(autoencoder, pixels)
        decoded = decode_latents(autoencoder, latents)
    to_images = lambda x: ((x.permute(0, 2, 3, 1).numpy() + 1) / 2).clip(0, 1)
    originals, reconstructions = to_images(pixels), to_images(decoded)
    judged = {name: np.array([judge_image(image, p) for image, p in zip(images, prompts)])
              for name, images in (("original", originals), ("reconstruction", reconstructions))}
    categories = sorted({parse_prompt(p).category for p in prompts})
    per_category = {c: round(float(np.mean([r for r, p in zip(judged["reconstruction"], prompts)
                                              if parse_prompt(p).category == c])), 3) for c in categories}
    report = {
        "num_scenes": NUM_SCENES, "seed": SEED,
        "mse_01": float(((originals - reconstructions) ** 2).mean()),
        "judge_original": float(judged["original"].mean()), "judge_reconstruction": float(judged["reconstruction"].mean()),
        "judge_reconstruction_per_category": per_category,
        "latent_mean": float(latents.mean()), "latent_std": float(latents.std()),
    }
    (out / "reconstruction.json").write_text(json.dumps(report, indent=1))
    pairs = np.stack([originals[:32], reconstructions[:32]], 1).reshape(-1, *originals.shape[1:])
    save_image_grid(pairs, out / "reconstruction.png", columns=8, tile_labels=[p for p in prompts[:32] for _ in range(2)],
                    title="validation renders (odd tiles) and their autoencoder reconstructions (even tiles)")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
