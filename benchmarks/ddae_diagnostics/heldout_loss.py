"""Held-out eps-MSE per timestep on the 360 test digits (same noise for every model): strokes.py's errors on the
test split. python heldout_loss.py MODEL [MODEL::RAW.safetensors ...]"""
import json, sys
from selfgen.data.digits import load_digits_arrays
from strokes import grid_projector, model_errors

test, _ = load_digits_arrays("test", 16)
ts = [10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 990]
for path in sys.argv[1:]:
    rows = model_errors(path, test, grid_projector(), ts)
    print(path, json.dumps({**{t: rows[t]["eps_mse"] for t in ts}, "mean": rows["mean_eps_mse"]}), flush=True)
