"""ZoomLDM large-image memory and time: one guided joint-sampling step vs image size, chunked vs unchunked.

    OMP_NUM_THREADS=1 python benchmarks/zoomldm.py [--model assets/zoomldm-retina] [--sizes 256 512 1024]
        [--batch_size 16] [--unchunked_up_to 512] [--window_stride N]

One step of ``pipe.generate_large_image``'s sampler on an ``S x S`` image (level-0 canvas plus its level-``L`` view,
windows ``--window_stride`` latent pixels apart, default the sampler's own, :attr:`odd_stride`): every window's clean
estimate (:meth:`windowed_clean`), then the cross-magnification guidance (:meth:`coupling_step`: blended decode of
both canvases and the exact gradient, window chunk by window chunk). Also the final decode of the level-0 canvas
(:meth:`final_decode`: blended windows, then the shift average where the pipeline applies it by default, in
128-px pieces). Each variant runs in a fresh subprocess; peak memory is the process's peak resident set size
minus its resident size just before the measured part (``ru_maxrss``), so it counts activations and buffers, not the
weights. The unchunked reference (``batch_size`` = every window at once) is run up to ``--unchunked_up_to``. Loads
the model read-only; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def one_step(model: str, size: int, batch_size: int, window_stride: int, part: str) -> dict:
    import torch

    from selfgen import ZoomLDMPipeline
    from selfgen.pipelines.zoomldm import canvas_windows

    pipe = ZoomLDMPipeline.from_pretrained(model)
    level, stride = pipe.check_canvas(size, size), window_stride or pipe.odd_stride
    generator = torch.Generator().manual_seed(0)
    field = pipe.embedding_field(None, size // pipe.patch_size, size // pipe.patch_size, level, generator, 2)
    canvases, windows, contexts = [], [], []
    for canvas_level in (0, level):
        side = size // pipe.latent_factor // 2**canvas_level
        canvases.append(torch.randn(1, pipe.denoiser.config.in_channels, side, side, generator=generator))
        windows.append(canvas_windows((side, side), pipe.window, stride))
        contexts.append(pipe.canvas_contexts(field, windows[-1], canvas_level, 1.0))
    batch = batch_size or max(len(w) for w in windows)
    timestep = pipe.scheduler.config.num_train_timesteps // 2
    before, started = rss_mb(), time.perf_counter()
    with torch.no_grad():
        if part == "step":
            clean = [pipe.windowed_clean(z, timestep, w, c, 1.0, batch) for z, w, c in zip(canvases, windows, contexts)]
            pipe.coupling_step(clean[0], clean[1], None, 2**level, 1.0, stride, batch)
        else:
            pipe.final_decode(canvases[0], stride, batch, None)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "windows": sum(map(len, windows)), "batch_size": batch_size or "all", "stride": stride,
            "peak_mb": peak_mb - before, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/zoomldm-retina")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--unchunked_up_to", type=int, default=512)
    parser.add_argument("--window_stride", type=int, default=0, help="latent pixels; 0: the sampler's default")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, batch, stride, part = args.child
        print(json.dumps(one_step(args.model, int(size), int(batch), int(stride), part)))
        return

    def child(size: int, batch: int, part: str) -> dict:
        command = [sys.executable, __file__, "--model", args.model, "--child", str(size), str(batch),
                   str(args.window_stride), part]
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        return json.loads(output.splitlines()[-1])

    print(f"{'size':>6} {'stride':>6} {'windows':>8} {'batch':>6} {'peak MB / step':>15} {'s / step':>9}", flush=True)
    for size in args.sizes:
        for batch in [args.batch_size] + ([0] if size <= args.unchunked_up_to else []):
            row = child(size, batch, "step")
            print(f"{size:>6} {row['stride']:>6} {row['windows']:>8} {str(row['batch_size']):>6} "
                  f"{row['peak_mb']:>15.0f} {row['seconds']:>9.1f}", flush=True)
    print(f"{'size':>6} {'final decode peak MB':>21} {'s':>6}", flush=True)
    for size in args.sizes:
        row = child(size, args.batch_size, "decode")
        print(f"{size:>6} {row['peak_mb']:>21.0f} {row['seconds']:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
