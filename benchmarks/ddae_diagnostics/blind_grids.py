"""Blind legibility count: the first 64 images of each sample file (N, 16, 16, 1) in [0, 1] as unlabelled grids
OUT/blind-<letter>.png in a random order, and the key (letter -> file) in OUT/blind-key.json, to be read only
after counting. python benchmarks/ddae_diagnostics/blind_grids.py A.npy B.npy ... [--out outputs/blind]"""
import argparse, json, random
from pathlib import Path
import numpy as np
from selfgen.eval.plots import save_image_grid

parser = argparse.ArgumentParser()
parser.add_argument("files", nargs="+")
parser.add_argument("--out", default="outputs/blind")
args = parser.parse_args()
if len(args.files) > 8:
    parser.error("at most 8 files")
order = random.Random().sample(args.files, len(args.files))
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
key = {}
for letter, path in zip("PQRSTUVW", order):
    save_image_grid(np.load(path)[:64], out / f"blind-{letter}.png", scale=5)
    key[letter] = path
(out / "blind-key.json").write_text(json.dumps(key))
