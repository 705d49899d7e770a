"""Held-out eps-MSE on the 360 test digits with the injection as is vs replaced by its mean over the images
(removes only its between-image part) vs removed: python ablate_variation.py MODEL[::RAW] ..."""
import json, sys
import torch
from safetensors.torch import load_file
from selfgen.train.ddae import load_pipeline
from selfgen.data.digits import load_digits_arrays

test, _ = load_digits_arrays("test", 16)
ts = [10, 100, 300, 500, 700, 900]
for arg in sys.argv[1:]:
    model, _, raw = arg.partition("::")
    pipe = load_pipeline(model, "ddpm")
    net = pipe.transformer
    if raw:
        net.load_state_dict(load_file(raw))
    mode = {"v": "as_is"}
    def hook(module, inputs, output):
        if mode["v"] == "mean":
            return output.mean(0, keepdim=True).expand_as(output)
        if mode["v"] == "zero":
            return torch.zeros_like(output)
        return output
    net.self_condition_embed[1].register_forward_hook(hook)  # W_s: its output is the injection
    res = {}
    with torch.no_grad():
        for m in ("as_is", "mean", "zero"):
            mode["v"] = m
            g = torch.Generator().manual_seed(0)
            errs = []
            for t in ts:
                noise = torch.randn(test.shape, generator=g)
                x = pipe.scheduler.add_noise(test, noise, torch.tensor([t]))
                errs.append(float(((net(x, t).sample - noise) ** 2).mean()))
            res[m] = [round(e, 5) for e in errs] + [round(sum(errs) / len(errs), 5)]
    print(arg, "t=", ts, json.dumps(res), flush=True)
