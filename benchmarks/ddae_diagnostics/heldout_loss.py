"""Held-out eps-MSE per timestep band on the 360 test digits (same noise for every model)."""
import json, sys
import torch
from selfgen.train.ddae import load_pipeline
from selfgen.data.digits import load_digits_arrays

test, _ = load_digits_arrays("test", 16)
ts = [10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 990]
out = {}
for path in sys.argv[1:]:
    model, _, raw = path.partition("::")
    pipe = load_pipeline(model, "ddpm")
    net = getattr(pipe, "transformer", None) or pipe.unet
    if raw:
        from safetensors.torch import load_file
        net.load_state_dict(load_file(raw))
    g = torch.Generator().manual_seed(0)
    res = {}
    with torch.no_grad():
        for t in ts:
            noise = torch.randn(test.shape, generator=g)
            x = pipe.scheduler.add_noise(test, noise, torch.tensor([t]))
            o = net(x, t)
            pred = o.sample if hasattr(o, "sample") else o[0]
            res[t] = round(float(((pred - noise) ** 2).mean()), 5)
    res["mean"] = round(sum(res[t] for t in ts) / len(ts), 5)
    out[path] = res
    print(path, json.dumps(res), flush=True)
