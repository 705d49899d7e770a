"""Where the self-conditioning injection's energy goes, on VALIDATION images (the stratified 20% of the training
split that the probe selects on; the test split is not read):
python injection_shares.py [--dataset textures|digits] MODEL ...

For v in {z (pooled block-L tokens), LN(z), u = W_s LN(z)} over images i and t in TIMESTEPS, the energy
E = mean ||v||^2 splits exactly into three shares:
  shared    ||mean_{i,t} v||^2 / E                         (one vector for every image and t: a bias)
  timestep  mean_t ||mean_i v(., t) - mean v||^2 / E        (a code of t: the decoder already has emb(t))
  per_image mean_{i,t} ||v(i, t) - mean_i v(., t)||^2 / E   (what differs between images at the same t)
and `class` = the part of `per_image` explained by the class means (between-class energy / E).
Also: ||u|| against ||emb(t)||, the RMS of u's per-image part in absolute units, a linear probe (fit on the other
80% of the training split, scored on the validation part) of z and of u at t = 0 and 100, and the held-out
eps-MSE on the validation images with u as is / with its per-image part removed (u -> mean_i u(., t)) /
with u removed (same noises in all three). Finally the spectrum of W_s: the share of its squared singular values
in the top one, the |cosine| of its top right-singular vector with the mean of the (centred, if the model
centres) input of W_s, and its gain ||W_s x|| / ||x|| on that mean and on the per-image deviations."""
import argparse, json
import numpy as np
import torch
from selfgen.data.digits import load_digits_arrays
from selfgen.data.textures import load_texture_arrays
from selfgen.eval.probe import linear_probe, validation_split
from selfgen.train.ddae import load_pipeline

TIMESTEPS = (0, 100, 300, 500, 700, 900)


def shares(v: torch.Tensor, labels: torch.Tensor) -> dict:
    """v: (T, N, D)."""
    energy = v.square().sum(-1).mean()
    grand = v.mean((0, 1))
    per_t = v.mean(1, keepdim=True)
    class_means = torch.stack([v[:, labels == c].mean(1) for c in labels.unique()], 1)  # (T, C, D)
    counts = torch.stack([(labels == c).sum() for c in labels.unique()]).float()
    between_class = ((class_means - per_t).square().sum(-1) * counts).sum(-1).mean() / len(labels)
    out = {
        "shared": grand.square().sum() / energy,
        "timestep": (per_t[:, 0] - grand).square().sum(-1).mean() / energy,
        "per_image": (v - per_t).square().sum(-1).mean() / energy,
        "class": between_class / energy,
    }
    return {k: round(float(x), 5) for k, x in out.items()}


parser = argparse.ArgumentParser()
parser.add_argument("models", nargs="+")
parser.add_argument("--dataset", default="textures", choices=("textures", "digits"))
args = parser.parse_args()
images, labels = load_texture_arrays("train") if args.dataset == "textures" else load_digits_arrays("train", 16)
fit_index, val_index = validation_split(labels.numpy())
val_images, val_labels = images[val_index], labels[val_index]
for path in args.models:
    pipe = load_pipeline(path, "ddpm")
    net, scheduler = pipe.transformer.eval(), pipe.scheduler
    mode = {"v": "as_is"}

    def hook(module, inputs, output):
        if mode["v"] == "mean":
            return output.mean(0, keepdim=True).expand_as(output)
        return torch.zeros_like(output) if mode["v"] == "zero" else output

    net.self_condition_embed[1].register_forward_hook(hook)  # W_s: its output is the injection
    z, ln, u, errors = [], [], [], {m: [] for m in ("as_is", "mean", "zero")}
    cond_norm = {}
    with torch.no_grad():
        for t in TIMESTEPS:
            noise = torch.randn(val_images.shape, generator=torch.Generator().manual_seed(t))
            noisy = scheduler.add_noise(val_images, noise, torch.tensor([t]))
            for m in errors:
                mode["v"] = m
                out = net(noisy, t)
                errors[m].append(float((out.sample - noise).square().mean()))
                if m == "as_is":
                    z.append(out.semantic), u.append(out.injection), ln.append(net.self_condition_embed[0](out.semantic))
            cond_norm[t] = round(float(net._condition(torch.tensor([t]), None, 1).norm()), 3)
        z, ln, u = torch.stack(z), torch.stack(ln), torch.stack(u)
        probe = {}
        for t in (0, 100):
            x = images.clone()
            noisy = scheduler.add_noise(x, torch.randn(x.shape, generator=torch.Generator().manual_seed(1)), torch.tensor([t])) if t else x
            mode["v"] = "as_is"
            out = net(noisy, t)
            for name, feats in (("z", out.semantic), ("u", out.injection)):
                f = feats.numpy()
                probe[f"{name}@t={t}"] = round(linear_probe(f[fit_index], labels[fit_index].numpy(), f[val_index], labels[val_index].numpy()), 4)
    weight = net.self_condition_embed[1].weight.detach()
    _, singular, right = torch.linalg.svd(weight)
    centred = ln - (net.semantic_mean[(torch.tensor(TIMESTEPS) * len(net.semantic_mean) // 1000)][:, None]
                    if net.config.self_condition_centering else 0)
    mean_in, dev_in = centred.mean((0, 1)), (centred - centred.mean(1, keepdim=True)).flatten(0, 1)
    spectrum = {
        "top1_energy": round(float(singular[0] ** 2 / singular.square().sum()), 4),
        "cos_top1_mean_input": round(float((right[0] @ mean_in).abs() / mean_in.norm()), 4),
        "gain_on_mean_input": round(float((weight @ mean_in).norm() / mean_in.norm()), 4),
        "gain_on_per_image_part": round(float((dev_in @ weight.T).norm() / dev_in.norm()), 4),
    }
    row = {
        "model": path,
        "W_s": spectrum,
        "u_norm": [round(float(x), 3) for x in u.norm(dim=-1).mean(1)],
        "emb_t_norm": cond_norm,
        "u_per_image_rms": [round(float(x), 4) for x in (u - u.mean(1, keepdim=True)).norm(dim=-1).mean(1)],
        "shares_z": shares(z, val_labels),
        "shares_LN(z)": shares(ln, val_labels),
        "shares_u": shares(u, val_labels),
        "probe_validation": probe,
        "val_eps_mse": {m: round(float(np.mean(e)), 6) for m, e in errors.items()},
        "timesteps": TIMESTEPS,
    }
    print(json.dumps(row), flush=True)
