"""Does fitting the model's own samples pull it in a consistent direction? (docs/srum.md, eighteenth pass, lead)

The SRUM update is flow matching on the model's own samples. At a model that already fits the distribution its
samples come from, the expected gradient of that loss is zero and minibatch gradients are noise (pairwise cosine
about 0); a consistent direction means the samples differ systematically from what the model has learnt, and
the update drifts toward that difference whatever the reward says. This script measures the mean pairwise cosine
between the gradients (generation parameters, ``constraint_weight`` 0, uniform weights: the reward-blind update)
of 8 disjoint minibatches of 32 samples, each with fixed noise, for

* ground-truth renders of the same 256 training-split prompts (the data the model was pretrained on), and
* the model's own samples at each ``(guidance, Euler steps)`` given, with the loss's ``x0`` either the sampled
  latent kept as it is or the decoded image re-encoded by the frozen autoencoder (what the loop and the authors do).

    OMP_NUM_THREADS=1 python benchmarks/srum_gradient_consistency.py <latent UnifiedPipeline> 3:16 1:16 1:64
"""
import contextlib
import itertools
import random
import sys
from collections.abc import Iterator

import numpy as np
import torch

import selfgen.pipelines.unified as unified_pipeline
from selfgen import UnifiedPipeline
from selfgen.data.scenes import parse_prompt, render_scene, sample_scene, sample_training_prompt
from selfgen.train.srum import SelfGeneratedDataset, SRUMObjective, set_trainable

MINIBATCHES, BATCH = 8, 32


def gradient_cosine(umm: UnifiedPipeline, samples: torch.Tensor, prompt_ids: torch.Tensor) -> float:
    """Mean pairwise cosine between the minibatch gradients of the uniform-weight flow loss on ``samples``."""
    params = umm.generation_parameters()
    set_trainable(umm.transformer, params)
    umm.transformer.train()
    dataset = SelfGeneratedDataset(samples, prompt_ids, np.ones((len(samples), *samples.shape[2:]), np.float32))
    objective, gradients = SRUMObjective(umm, constraint_weight=0.0), []
    for index in range(MINIBATCHES):
        rows = list(range(BATCH * index, BATCH * (index + 1)))
        batch = {"sample": dataset.samples[rows], "prompt_ids": dataset.prompt_ids[rows], "reward_map": dataset.maps[rows]}
        torch.manual_seed(1000 + index)
        umm.transformer.zero_grad()
        objective.compute_loss(umm.transformer, batch)[0].backward()
        gradients.append(torch.cat([param.grad.flatten() for param in params]))
    umm.transformer.eval()
    pairs = itertools.combinations(gradients, 2)
    return float(np.mean([torch.nn.functional.cosine_similarity(a, b, dim=0).item() for a, b in pairs]))


@contextlib.contextmanager
def keeping_sampled_latents() -> Iterator[dict]:
    """While open, every latent pipeline's sampled latents (before decoding) are kept in the yielded dict's
    ``"latents"`` (the last generation's)."""
    kept, decode = {}, unified_pipeline.decode_latents

    def keep_latents(vae, latents):
        kept["latents"] = latents.detach().float().cpu()
        return decode(vae, latents)

    unified_pipeline.decode_latents = keep_latents
    try:
        yield kept
    finally:
        unified_pipeline.decode_latents = decode


def own_samples(umm: UnifiedPipeline, prompts: list[str], guidance: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampled latents and the re-encoded decoded images of one generation of ``prompts``."""
    with keeping_sampled_latents() as kept, torch.no_grad():
        images = umm.generate(prompts, num_inference_steps=steps, guidance_scale=guidance,
                              generator=torch.Generator().manual_seed(1), output_type="np").images
    return kept["latents"], umm.encode_samples(images).float().cpu()


def main(model_path: str, settings: list[str]) -> None:
    umm = UnifiedPipeline.from_pretrained(model_path)
    umm.set_progress_bar_config(disable=True)
    if umm.vae is None:
        raise ValueError(f"{model_path} has no vae: this diagnostic compares kept and re-encoded latents")
    rng = random.Random("0-round-1")
    prompts = [sample_training_prompt(rng) for _ in range(MINIBATCHES * BATCH)]
    prompt_ids = umm.encode_prompts(prompts).cpu()
    scene_rng = random.Random(7)
    renders = np.stack([render_scene(sample_scene(parse_prompt(prompt), scene_rng)) for prompt in prompts])
    renders = renders.astype(np.float32) / (255.0 if renders.max() > 1.5 else 1.0)
    print(f"renders             cosine {gradient_cosine(umm, umm.encode_samples(renders).float().cpu(), prompt_ids):+.3f}")
    for setting in settings:
        guidance, steps = float(setting.split(":")[0]), int(setting.split(":")[1])
        kept, reencoded = own_samples(umm, prompts, guidance, steps)
        gap = (reencoded - kept).pow(2).mean().sqrt().item()
        for name, samples in (("kept", kept), ("re-encoded", reencoded)):
            print(f"w={guidance:g} steps={steps:<3d} {name:10s} cosine {gradient_cosine(umm, samples, prompt_ids):+.3f}"
                  f"   (rms re-encoded - kept {gap:.3f})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or ["3:16", "1:16", "1:64"])
