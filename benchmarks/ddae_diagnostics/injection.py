"""Between-image share of W_s LN(z) and LN(z) on the 360 test digits at fixed t: python injection.py MODEL[::RAW] ..."""
import json, sys
from safetensors.torch import load_file
from selfgen.train.ddae import load_pipeline, injection_by_timestep
from selfgen.data.digits import load_digits_arrays

test, _ = load_digits_arrays("test", 16)
for arg in sys.argv[1:]:
    model, _, raw = arg.partition("::")
    pipe = load_pipeline(model, "ddpm")
    if raw:
        pipe.transformer.load_state_dict(load_file(raw))
    stats = injection_by_timestep(pipe, test, timesteps=(0, 100, 500))
    print(arg, json.dumps({t: {k: round(v, 5) for k, v in s.items()} for t, s in stats.items()}), flush=True)
