"""Why the unified model's generator does not draw shapes, on VALIDATION prompts (training-split prompts with fresh
noise; the held-out prompts are never looked at here). docs/srum.md, eleventh pass.

1. per category: the rule judge's accuracy and what it says is wrong (:func:`selfgen.eval.scenes.failure_reason`:
   colour / shape / size / count / relation), and for single-object prompts how many components the asked colour
   breaks into (1 = one blob);
2. the sampler: Euler steps and guidance scale, chosen here on validation;
3. the x0 estimates ``x0 = x_sigma - sigma v`` along the sampler's path, judged: do shapes form at low noise and
   get lost, or never form;
4. one step from a rendered validation scene noised to sigma: does the model restore the shape it is shown.

    python benchmarks/srum_generation_diagnosis.py outputs/unified-shapes-conv-repair/pipeline   # ~10 min on a busy shared core
    python benchmarks/srum_generation_diagnosis.py outputs/unified-shapes-conv-repair/pipeline 3.0   # 2. only, sigma shift 3
"""
import collections
import json
import random
import sys

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from selfgen import UnifiedPipeline
from selfgen.data.scenes import COLOURS, PAD_ID, BOS_ID, EOS_ID, parse_prompt, render_scene, sample_scene
from selfgen.eval.scenes import FAILURES, detect_objects, failure_reason, judge_image
from selfgen.eval.statistics import bootstrap_interval
from selfgen.train.unified import heldout_prompts

PER_CATEGORY, SAMPLES, SEED = 8, 2, 100  # validation: 8 training-split prompts per category x 2 noises
SAMPLER = ((20, 3.0), (20, 1.5), (20, 5.0), (40, 3.0))  # (Euler steps, guidance scale); (20, 3) the default
X0_SIGMAS = (0.9, 0.7, 0.5, 0.3, 0.15)
SINGLE = ("colour", "size")


def to_np(pixels: torch.Tensor) -> np.ndarray:
    return ((pixels.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def guided_velocity(pipe, x, sigma, ids, empty, scale):
    both = pipe.transformer(sample=torch.cat([x, x]), timestep=torch.full((2 * len(x),), sigma * 1000),
                            prompt_ids=torch.cat([empty, ids])).sample
    uncond, cond = both.chunk(2)
    return uncond + scale * (cond - uncond)


def report(images, prompts):
    """Accuracy per category (95% bootstrap interval) and the failure shares."""
    out, reasons = {}, collections.defaultdict(collections.Counter)
    correct = collections.defaultdict(list)
    for image, prompt in zip(images, prompts):
        category = parse_prompt(prompt).category
        reason = failure_reason(image, prompt)
        reasons[category][reason or "ok"] += 1
        correct[category].append(reason is None)
    for category, right in correct.items():
        low, high = bootstrap_interval(np.mean, np.asarray(right, float), num_resamples=500)
        out[category] = {"accuracy": round(float(np.mean(right)), 3), "ci": [round(low, 3), round(high, 3)],
                         "failures": {k: reasons[category][k] for k in ("ok", *FAILURES) if reasons[category][k]}}
    single = [r for c in SINGLE for r in correct[c]]
    out["single_object"] = round(float(np.mean(single)), 3)
    out["overall"] = round(float(np.mean([np.mean(v) for v in correct.values()])), 3)
    return out


def components(images, prompts):
    """For single-object prompts: the number of components of the asked colour (1 = one blob)."""
    counts = collections.Counter()
    for image, prompt in zip(images, prompts):
        spec = parse_prompt(prompt)
        if spec.category in SINGLE:
            n = sum(d.colour == spec.objects[0].colour for d in detect_objects(image))
            counts[min(n, 3)] += 1
    return {("3+" if k == 3 else str(k)): v for k, v in sorted(counts.items())}


def main(path: str, shift: float | None = None) -> None:
    pipe = UnifiedPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    if shift is not None:  # the sampler only, with the schedule's sigmas shifted toward high noise (SD3's shift)
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=shift)
    prompts = [p for p in heldout_prompts(PER_CATEGORY, SEED, split="train") for _ in range(SAMPLES)]
    result = {"model": path, "num_images": len(prompts)}
    grid = {}
    for steps, scale in SAMPLER:
        images = pipe.generate(prompts, num_inference_steps=steps, guidance_scale=scale,
                               generator=torch.Generator().manual_seed(SEED), output_type="np").images
        rep = report(images, prompts)
        grid[f"{steps}x{scale}"] = {"overall": rep["overall"], "single_object": rep["single_object"]}
        print(steps, scale, grid[f"{steps}x{scale}"], file=sys.stderr, flush=True)
        if (steps, scale) == (20, 3.0):
            result["default_20_steps_guidance_3"] = rep
            result["single_object_components_of_asked_colour"] = components(images, prompts)
    result["sampler_grid_overall_single"] = grid
    if shift is not None:
        print(json.dumps({"shift": shift, **result}, indent=1))
        return
    # x0 estimates along the default sampler's path (20 Euler steps, guidance 3)
    ids = pipe.encode_prompts(prompts)
    empty = torch.full_like(ids, PAD_ID)
    empty[:, 0], empty[:, 1] = BOS_ID, EOS_ID
    pipe.scheduler.set_timesteps(20)
    sigmas = pipe.scheduler.sigmas.tolist()
    x = torch.randn(len(prompts), 3, 32, 32, generator=torch.Generator().manual_seed(SEED))
    path_reports = {}
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            v = guided_velocity(pipe, x, sigma, ids, empty, 3.0)
            if any(abs(sigma - s) < 0.026 for s in X0_SIGMAS):
                rep = report(to_np(x - sigma * v), prompts)
                path_reports[f"{sigma:.2f}"] = {"overall": rep["overall"], "single_object": rep["single_object"],
                                                "single_failures": {c: rep[c]["failures"] for c in SINGLE}}
            x = x + (sigma_next - sigma) * v
        final = to_np(x)
        path_reports["final"] = {"overall": report(final, prompts)["overall"]}
    result["x0_along_sampler_path"] = path_reports
    # one step from rendered validation scenes noised to sigma
    rng = random.Random(SEED)
    clean = np.stack([render_scene(sample_scene(parse_prompt(p), rng)) for p in prompts])
    x0 = torch.from_numpy(clean).permute(0, 3, 1, 2) * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(SEED + 1))
    restored = {}
    with torch.no_grad():
        for sigma in (0.2, 0.4, 0.6, 0.8):
            xs = (1 - sigma) * x0 + sigma * noise
            v = guided_velocity(pipe, xs, sigma, ids, empty, 1.0)
            rep = report(to_np(xs - sigma * v), prompts)
            restored[f"{sigma}"] = {"overall": rep["overall"], "single_object": rep["single_object"],
                                    "per_category": {c: rep[c]["accuracy"] for c in rep if isinstance(rep[c], dict)}}
    result["one_step_from_rendered_scene"] = restored
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else None)
