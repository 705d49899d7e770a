"""Classifier FD of 512 samples (seed-0 noise) for a sampler / weights choice, appended to outputs/fdsweep/results.jsonl:
OMP_NUM_THREADS=1 python benchmarks/ddae_diagnostics/fd.py MODEL [--raw CHECKPOINT/model.safetensors] [--sched ddim|dpm|ddpm] [--steps 25] [--save PREFIX]"""
import argparse, json, time
from pathlib import Path
import numpy as np, torch
from safetensors.torch import load_file
from selfgen.train.ddae import load_pipeline
from selfgen.data.digits import load_digits_arrays
from selfgen.eval import probe

p = argparse.ArgumentParser()
p.add_argument("model"); p.add_argument("--raw"); p.add_argument("--sched", default="ddim")
p.add_argument("--steps", type=int, default=25); p.add_argument("--n", type=int, default=512)
p.add_argument("--tag", default="")
p.add_argument("--save")
a = p.parse_args()
pipe = load_pipeline(a.model, a.sched)
if a.raw:
    net = getattr(pipe, "transformer", None) or pipe.unet
    net.load_state_dict(load_file(a.raw))
t0 = time.time()
imgs = pipe(batch_size=a.n, num_inference_steps=a.steps, generator=torch.Generator().manual_seed(0), output_type="np").images
test, _ = load_digits_arrays("test", 16)
m = probe.generation_metrics(imgs, test)
m.update(model=a.model, raw=a.raw, sched=a.sched, steps=a.steps, secs=time.time() - t0, tag=a.tag)
print(json.dumps(m))
Path("outputs/fdsweep").mkdir(parents=True, exist_ok=True)
with open("outputs/fdsweep/results.jsonl", "a") as f: f.write(json.dumps(m) + "\n")
if a.save:
    np.save(a.save + ".npy", imgs)
    from selfgen.eval.plots import save_image_grid
    save_image_grid(imgs[:64], a.save + ".png", title=a.tag)
