"""Is the Frechet-distance miss the sampler? Classifier FD of 512 samples against the VALIDATION digits (the
stratified 20% part of the training split that the probe also selects on; never the test digits), for each
sampler setting x model, appended to OUT (default outputs/samplersweep/validation.jsonl).
Starting noise: seed 0 (as in `selfgen eval ddae`), the same for every model and setting; the samples are saved
as OUT_DIR/<model>-<setting>.npy so that the chosen setting's test FD is computed later from the same samples
(seeds.py --samples), the test digits never entering the choice.
OMP_NUM_THREADS=1 python benchmarks/ddae_diagnostics/sampler.py --models A B ... --settings ddim25 dpm25 ...
  a model MODEL::RAW.safetensors loads raw checkpoint weights into MODEL's network (strokes.load_model);
  --seed S (not 0) draws another noise and tags the files -seedS
  --score SAMPLES.npy:SETTING ...   also score samples drawn earlier (e.g. an eval folder's DDIM-25 samples.npy)
A setting is SCHED+STEPS with optional suffixes: -eta1 (DDIM eta = 1, ancestral), -trailing (timestep_spacing),
-clip (DPM-Solver++: clip each x0 prediction to the data range [-1, 1], diffusers' thresholding with
sample_max_value 1; DDIM and DDPM clip by the checkpoints' scheduler config already), -noclip (DDIM/DDPM: do not),
-temp0.8 (starting noise x_T = 0.8 * the seed's N(0, I) draw: a lower sampling temperature, a departure from the
paper's sampler, for legibility measurements only), -pagW-lA_B / -slgW-lA_B (DDAE only: self-guidance
eps_bad + W (eps - eps_bad), eps_bad with the identity attention map (PAG) / skipped blocks (SLG) in blocks A, B;
the pipeline's perturbed_guidance_scale, a departure from the paper's unguided sampler; for the foundation UNet,
-pagW-l1 only: PAG at its one self-attention layer, the mid block's, through diffusers' PAGIdentitySelfAttnProcessor2_0).
Each record also carries judge_confident_share: the share of samples the bundled digits classifier gives p >= 0.9."""
import argparse, functools, json, re, time
from pathlib import Path
import numpy as np, torch
from diffusers.models.attention_processor import PAGIdentitySelfAttnProcessor2_0
from diffusers.models.unets.unet_2d import UNet2DOutput
from selfgen.data.digits import load_digits_arrays
from selfgen.eval import probe
from selfgen.eval.plots import save_image_grid
from selfgen.pipelines.pipeline_utils import SCHEDULERS
from strokes import load_model  # same folder: run from the repository root as a script


def configure(pipe, setting: str) -> int:
    """Swap in the scheduler named by ``setting``; returns its number of steps."""
    match = re.fullmatch(r"(ddim|dpm|ddpm)(\d+)((?:-eta[\d.]+|-trailing|-clip|-noclip|-temp[\d.]+|-(?:pag|slg)[\d.]+-l[\d_]+)*)", setting)
    if match is None:
        raise ValueError(f"setting {setting!r}: expected e.g. ddim25, dpm50, ddim50-eta1, ddim25-trailing, dpm25-clip-temp0.8")
    name, steps, extra = match.group(1), int(match.group(2)), match.group(3)
    overrides = {"timestep_spacing": "trailing"} if "-trailing" in extra else {}
    if "-clip" in extra and name == "dpm":
        overrides.update(thresholding=True, sample_max_value=1.0)
    if "-noclip" in extra:
        overrides["clip_sample"] = False
    pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config, **overrides)
    eta = re.search(r"-eta([\d.]+)", extra)
    if eta:  # the shared denoising loop calls scheduler.step(eps, t, x, generator=...): bind DDIM's eta here
        pipe.scheduler.step = functools.partial(pipe.scheduler.step, eta=float(eta.group(1)))
    return steps


def self_guidance(setting: str) -> dict:
    """The DDAE pipeline's self-guidance arguments named by a ``-pagW-lA_B`` / ``-slgW-lA_B`` suffix ({} without one)."""
    found = re.search(r"-(pag|slg)([\d.]+)-l([\d_]+)", setting)
    if found is None:
        return {}
    return dict(perturbed_guidance_scale=float(found.group(2)), perturbed_layers=[int(x) for x in found.group(3).split("_")],
                perturbation="attention" if found.group(1) == "pag" else "skip")


def guide_unet(unet, guidance: dict) -> None:
    """Self-guide a diffusers UNet2DModel in place: ``eps_bad + w (eps - eps_bad)``, ``eps_bad`` with the identity
    attention map at its first self-attention (the mid block's), diffusers' PAG processor on a doubled batch."""
    if guidance["perturbation"] != "attention" or guidance["perturbed_layers"] != [1]:
        raise ValueError(f"the UNet takes -pagW-l1 only (its mid-block self-attention), got {guidance}")
    attn, forward, scale = unet.mid_block.attentions[0], unet.forward, guidance["perturbed_guidance_scale"]

    def guided(sample, timestep, *args, **kwargs):
        plain = attn.processor
        attn.set_processor(PAGIdentitySelfAttnProcessor2_0())  # first half of the batch: attention; second: identity
        try:
            full, bad = forward(torch.cat([sample, sample]), timestep, *args, **kwargs).sample.chunk(2)
        finally:
            attn.set_processor(plain)
        return UNet2DOutput(sample=bad + scale * (full - bad))

    unet.forward = guided


def temperature(setting: str) -> float:
    """The starting-noise scale named by a ``-tempT`` suffix (1 without one)."""
    found = re.search(r"-temp([\d.]+)", setting)
    return float(found.group(1)) if found else 1.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--score", nargs="*", default=[])
    parser.add_argument("--settings", nargs="+", default=["ddim25", "dpm25", "ddim50", "dpm50", "ddim100"])
    parser.add_argument("--num_samples", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/samplersweep/validation.jsonl")
    args = parser.parse_args()
    images, labels = load_digits_arrays("train", 16)
    images = images[probe.validation_split(labels.numpy())[1]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def record(samples, **fields) -> None:
        metrics = probe.generation_metrics(samples, images)
        confidence = probe.load_digits_classifier(None)(probe.to_tensor(samples)).softmax(-1).max(-1).values
        metrics["judge_confident_share"] = float((confidence >= 0.9).float().mean())
        metrics.update(split="validation", reference_size=len(images), **fields)
        print(json.dumps(metrics), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(metrics) + "\n")

    for item in args.score:
        path, setting = item.rsplit(":", 1)
        record(np.load(path), model=path, setting=setting, noise_seed=None, secs=0)
    for setting in args.settings:
        for model in args.models:
            pipe = load_model(model, "ddim")
            pipe.set_progress_bar_config(disable=True)
            steps = configure(pipe, setting)
            guidance = self_guidance(setting)
            if guidance and hasattr(pipe, "unet"):
                guide_unet(pipe.unet, guidance)
                guidance = {}
            start = time.time()
            generator = torch.Generator().manual_seed(args.seed)
            net = getattr(pipe, "transformer", None) or pipe.unet
            shape = (args.num_samples, net.config.in_channels, net.config.sample_size, net.config.sample_size)
            latents = temperature(setting) * torch.randn(shape, generator=generator)  # = the pipeline's own draw at T = 1
            samples = pipe(batch_size=args.num_samples, num_inference_steps=steps, generator=generator,
                           latents=latents, output_type="np", **guidance).images
            record(samples, model=model, setting=setting, noise_seed=args.seed, secs=round(time.time() - start, 1))
            tag = re.sub(r"[^A-Za-z0-9]+", "_", model.strip("/").split("outputs/")[-1]) + (f"-seed{args.seed}" if args.seed else "")
            np.save(out.parent / f"{tag}-{setting}.npy", samples)
            save_image_grid(samples[:64], out.parent / f"{tag}-{setting}.png", title=f"{model} {setting} seed {args.seed}")


if __name__ == "__main__":
    main()
