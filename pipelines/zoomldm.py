"""ZoomLDM pipeline: magnification-aware latent diffusion, large images by joint multi-scale sampling, 4x SR.

Patches are ``P x P`` (32) images at magnification level ``k`` (0 = highest magnification; a level-``k``
patch covers ``P 2^k`` source pixels). Sampling one patch:

1. conditioning ``s``: the SSL embeddings of the reference region's level-0 sub-patches pooled to a
   ``g x g`` grid (``g = min(2^k, G)``), or, with no reference, ``s_0`` drawn from the conditioning
   diffusion model ``eps_phi(s_t, t, k)`` (the paper's CDM);
2. ``c = summarizer(s, k)``; DDIM in the VAE latent space with ``eps_theta(z_t, t, c)`` (classifier-free
   guidance ``eps_u + w (eps_c - eps_u)`` when ``guidance_scale = w != 1``); ``x = D(z_0 / sf)``.

**Large images** (:meth:`generate_large_image`, any ``H x W`` multiple of ``P``): a level-0 latent canvas and a
level-``L`` view canvas are denoised together. Each DDIM step cuts both canvases into overlapping one-patch windows,
averages the windows' clean estimates per canvas (the official sliding-window sampler), conditions each window on
SSL embeddings interpolated between grid cells, and couples the two magnifications by the paper's gradient
guidance on ``L = 1/2 ||A(D(z0_high)) - D(z0_low)||^2``; decoding blends overlapping windows with a Gaussian weight.
Every pass over windows is chunked (``batch_size``), so memory does not grow with the image.

**Super-resolution** (:meth:`super_resolve`): condition inversion (the embedding field that minimises the model's
denoising loss on the low-resolution input at its magnification), then the same sliding-window sampler from pure
noise with the input as the fixed view (``sr_guidance``: the decoder-gradient step on every clean estimate, or the
official notebook's correction of the noisy latent with a re-predicted clean estimate), and a final
data-consistency step (:func:`match_low_frequencies`).

Departures (see ``docs/zoomldm.md``): the guidance gradient is taken with respect to the clean latent estimate
(through the decoder only) with a Polyak step size; window embeddings are interpolated bilinearly (the official
code uses slerp and re-standardises); inversion optimises a per-tile embedding field; large images default to an
odd window stride (3 latent pixels, :attr:`ZoomLDMPipeline.odd_stride`) where the official code uses a quarter window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ImagePipelineOutput, SchedulerMixin, UNet2DConditionModel
from diffusers.utils import BaseOutput

from ..data.validation import check_positive_int, images_to_tensor
from ..models.zoomldm import (
    ZoomAutoencoder,
    ZoomConditioner,
    ZoomEmbeddingDiffusion,
    ZoomLDMDenoiser,
    ZoomSSLEncoder,
    full_grid_to_tokens,
    grid_side,
)
from .pipeline_utils import SelfgenPipeline, check_output_type, postprocess_images

COUPLINGS = ("guidance", "none")
SR_GUIDANCES = ("clean_gradient", "noisy_projection", "none")


def images_to_pixels(images, name: str) -> torch.Tensor:
    """numpy ``(N, H, W, 3)`` in ``[0, 1]`` or torch ``(N, 3, H, W)`` in ``[-1, 1]`` -> torch ``(N, 3, H, W)``
    in ``[-1, 1]``, checked by the shared :func:`~selfgen.data.validation.images_to_tensor` (no NaN/inf, no
    0-255 values, no empty batch); anything else is a ``ValueError`` naming ``name``."""
    return images_to_tensor(images, name, channels=3)


def assemble_tiles(tiles: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``(N * rows * cols, C, p, p)`` row-major tiles -> ``(N, C, rows p, cols p)``."""
    count, channels, size, _ = tiles.shape
    grid = tiles.reshape(count // (rows * cols), rows, cols, channels, size, size)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(-1, channels, rows * size, cols * size)


def split_tiles(images: torch.Tensor, size: int) -> torch.Tensor:
    """Inverse of :func:`assemble_tiles`: ``(N, C, H, W)`` -> ``(N * H/size * W/size, C, size, size)``."""
    batch, channels, height, width = images.shape
    grid = images.reshape(batch, channels, height // size, size, width // size, size)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(-1, channels, size, size)


def match_low_frequencies(image: torch.Tensor, target: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """Back-projection of ``(N, 3, H, W)`` images in ``[-1, 1]`` onto ``A(X) = target`` (``A``: area downsampling
    to ``target``'s size): ``iterations`` smooth steps ``X <- clamp(X + U_bilinear(target - A(X)))``, then as many
    exact ones with ``U_nearest`` (``A U_nearest = I``: the least-norm correction), i.e. alternating projections
    onto the consistent set and the pixel box, so that ``A(X) = target`` holds after clamping too."""
    factor = image.shape[-1] // target.shape[-1]
    for mode in ("bilinear", "nearest"):
        for _ in range(iterations):
            residual = target - F.avg_pool2d(image, factor)
            image = (image + F.interpolate(residual, scale_factor=factor, mode=mode)).clamp(-1, 1)
    return image


@dataclass
class LargeImageOutput(BaseOutput):
    """``images``: the large image(s); ``views``: the low-magnification view sampled with them."""

    images: list | np.ndarray | torch.Tensor
    views: list | np.ndarray | torch.Tensor


class ZoomLDMPipeline(SelfgenPipeline):
    """Sample multi-scale patches, large images and 4x super-resolutions with ZoomLDM.

    Example::

        pipe = ZoomLDMPipeline.from_pretrained("assets/zoomldm-retina")
        g = torch.Generator().manual_seed(0)
        patches = pipe(magnification=2, num_images=8, generator=g, output_type="np").images
        large = pipe.generate_large_image(height=128, width=128, generator=g, output_type="np").images
    """

    model_cpu_offload_seq = "ssl_encoder->embedding_model->conditioner->denoiser->vae"
    _optional_components = ["conditioner"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        vae: AutoencoderKL | ZoomAutoencoder,
        denoiser: ZoomLDMDenoiser | UNet2DConditionModel,
        ssl_encoder: ZoomSSLEncoder,
        embedding_model: ZoomEmbeddingDiffusion,
        scheduler: SchedulerMixin,
        conditioner: ZoomConditioner | None = None,
    ) -> None:
        """``denoiser``: our :class:`ZoomLDMDenoiser` (summarizer inside), or any diffusers
        ``UNet2DConditionModel`` with ``cross_attention_dim`` = the ``conditioner``'s ``context_dim`` (then
        ``conditioner`` is required: it turns the SSL tokens and the magnification into the context)."""
        super().__init__()
        if isinstance(denoiser, UNet2DConditionModel) and conditioner is None:
            raise ValueError("a UNet2DConditionModel denoiser needs conditioner=ZoomConditioner(...) for its context")
        self.register_modules(
            vae=vae, denoiser=denoiser, ssl_encoder=ssl_encoder, embedding_model=embedding_model, scheduler=scheduler,
            conditioner=conditioner,
        )

    # ------------------------------------------------------------------ pieces

    @property
    def geometry(self):
        """The config holding ``image_patch_size``, ``num_levels`` and ``max_grid``: the conditioner's if any."""
        return (self.conditioner if self.conditioner is not None else self.denoiser).config

    @property
    def patch_size(self) -> int:
        return self.geometry.image_patch_size

    @property
    def num_levels(self) -> int:
        return self.geometry.num_levels

    @property
    def max_grid(self) -> int:
        return self.geometry.max_grid

    def summarize(self, tokens, mask, levels, drop=None) -> torch.Tensor:
        if self.conditioner is not None:
            return self.conditioner(tokens, mask, levels, drop)
        return self.denoiser.summarize(tokens, mask, levels, drop)

    def denoise_with_context(self, latents: torch.Tensor, timestep, context: torch.Tensor) -> torch.Tensor:
        """``eps_theta(z_t, t, c)`` for either kind of denoiser."""
        if isinstance(self.denoiser, UNet2DConditionModel):
            timesteps = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(len(latents))
            return self.denoiser(latents, timesteps, encoder_hidden_states=context.to(self.denoiser.dtype)).sample
        return self.denoiser.denoise_with_context(latents, timestep, context)

    def check_magnification(self, magnification: int) -> None:
        if not isinstance(magnification, int) or not 0 <= magnification < self.num_levels:
            raise ValueError(
                f"magnification must be one of the trained levels 0..{self.num_levels - 1} "
                f"(0 = highest; level k covers {self.patch_size} * 2**k source pixels), got {magnification!r}"
            )

    def encode_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mean * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample.float()

    def embed_regions(self, regions: torch.Tensor, magnification: int) -> tuple[torch.Tensor, torch.Tensor]:
        """SSL conditioning of ``(N, 3, S, S)`` regions in ``[-1, 1]`` seen at ``magnification``: the region is
        resized to ``P 2^k``, split into its ``2^k x 2^k`` level-0 sub-patches, embedded and pooled to ``g x g``."""
        size, cells, max_grid = self.patch_size, 2**magnification, self.max_grid
        if regions.shape[-1] != size * cells or regions.shape[-2] != size * cells:
            regions = F.interpolate(regions, size=(size * cells, size * cells), mode="bicubic", align_corners=False)
        device = self._execution_device
        embeddings = self.ssl_encoder(split_tiles(regions, size).to(device, self.ssl_encoder.dtype)).float()
        grid = embeddings.reshape(len(regions), cells * cells, -1)
        full = F.interpolate(
            grid.reshape(len(regions), cells, cells, -1).permute(0, 3, 1, 2), size=(max_grid, max_grid), mode="area"
        ).permute(0, 2, 3, 1)
        return full_grid_to_tokens(full.reshape(len(regions), max_grid * max_grid, -1), magnification, max_grid)

    def sample_conditions(
        self, magnification: int, num_images: int, generator, num_inference_steps: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``num_images`` SSL grids at ``magnification`` from the conditioning diffusion model."""
        config = self.embedding_model.config
        shape = (num_images, config.max_grid**2, config.ssl_dim)
        levels = torch.full((num_images,), magnification, device=self._execution_device)
        full = self.prepare_latents(shape, self.embedding_model.dtype, generator)
        full = self.denoise(
            full, num_inference_steps, lambda grid, t: self.embedding_model(grid, t, levels).sample, generator
        )
        return full_grid_to_tokens(full.float(), magnification, config.max_grid)

    def context(self, tokens, mask, magnification: int | torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Cross-attention context ``c`` (with the null context appended for classifier-free guidance)."""
        device = self._execution_device
        levels = torch.as_tensor(magnification, device=device).reshape(-1).expand(len(tokens))
        context = self.summarize(tokens.to(device), mask.to(device), levels)
        if guidance_scale == 1.0:
            return context
        null = self.summarize(tokens.to(device), mask.to(device), levels, torch.ones_like(levels, dtype=torch.bool))
        return torch.cat([context, null])

    def to_clean(self, output: torch.Tensor, latents: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The clean estimate from the denoiser's output under the scheduler's ``prediction_type``:
        ``epsilon``: ``x0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)``; ``v_prediction``:
        ``x0 = sqrt(a_t) z_t - sqrt(1 - a_t) v`` (finite at a zero terminal SNR, ``a_T = 0``)."""
        if self.scheduler.config.prediction_type == "v_prediction":
            return alpha.sqrt() * latents.float() - (1 - alpha).sqrt() * output.float()
        return (latents.float() - (1 - alpha).sqrt() * output.float()) / alpha.sqrt()

    def from_clean(self, clean: torch.Tensor, latents: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The model output the scheduler steps on for the clean estimate ``clean`` (the inverse of :meth:`to_clean`):
        ``eps = (z_t - sqrt(a_t) x0) / sqrt(1 - a_t)`` or ``v = (sqrt(a_t) z_t - x0) / sqrt(1 - a_t)``."""
        if self.scheduler.config.prediction_type == "v_prediction":
            return (alpha.sqrt() * latents.float() - clean) / (1 - alpha).sqrt()
        return (latents.float() - alpha.sqrt() * clean) / (1 - alpha).sqrt()

    def predict_noise(self, latents: torch.Tensor, timestep, context: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        if guidance_scale == 1.0:
            return self.denoise_with_context(latents, timestep, context)
        both = self.denoise_with_context(torch.cat([latents, latents]), timestep, context)
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def latent_shape(self, count: int) -> tuple[int, int, int, int]:
        config = self.denoiser.config
        return (count, config.in_channels, config.sample_size, config.sample_size)

    def finish(self, images: torch.Tensor, output_type: str, return_dict: bool):
        images = postprocess_images(images, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def conditions(self, magnification, num_images, reference_images, generator, num_inference_steps):
        if reference_images is None:
            return self.sample_conditions(magnification, num_images, generator, num_inference_steps)
        return self.embed_regions(images_to_pixels(reference_images, "reference_images"), magnification)

    # ------------------------------------------------------------------ patches

    @torch.no_grad()
    def __call__(
        self,
        magnification: int = 0,
        num_images: int = 1,
        reference_images: np.ndarray | torch.Tensor | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        """Sample ``P x P`` patches at ``magnification``.

        Args:
            magnification: trained level ``k`` (0 = highest magnification).
            num_images: how many patches without a reference (ignored with ``reference_images``).
            reference_images: regions to condition on, numpy ``(N, S, S, 3)`` in ``[0, 1]``; ideally the full
                ``P 2^k`` pixel region (smaller regions are upsampled); one output per reference.
            guidance_scale: classifier-free guidance weight ``w`` (1 disables it).
        """
        self.check_magnification(magnification)
        tokens, mask = self.conditions(magnification, num_images, reference_images, generator, num_inference_steps)
        self.check_sampling_inputs(len(tokens), output_type, callback_on_step_end_tensor_inputs)
        context = self.context(tokens, mask, magnification, guidance_scale)
        latents = self.prepare_latents(self.latent_shape(len(tokens)), self.denoiser.dtype, generator, latents)
        latents = self.denoise(
            latents,
            num_inference_steps,
            lambda z, t: self.predict_noise(z, t, context, guidance_scale),
            generator,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )
        return self.finish(self.decode_latents(latents), output_type, return_dict)

    # ------------------------------------------------------------------ large canvases

    @property
    def window(self) -> int:
        """Side of one denoiser window in latent pixels (one ``P x P`` patch)."""
        return self.denoiser.config.sample_size

    @property
    def odd_stride(self) -> int:
        """The largest odd window stride of at most half a window (3 for 8-latent windows): consecutive windows then
        alternate the parity of their offset, so the denoiser's 2x2-latent token grid and the decoder's per-window
        artifacts fall on both phases of the canvas instead of adding up on the same 8-px lines."""
        half = self.window // 2
        return max(1, half - 1 + half % 2)

    @property
    def latent_factor(self) -> int:
        return self.patch_size // self.window

    def embedding_field(
        self, reference: torch.Tensor | None, rows: int, cols: int, level: int, generator, num_inference_steps: int
    ) -> torch.Tensor:
        """The ``(D, rows, cols)`` SSL-embedding field of a canvas of ``rows x cols`` level-0 tiles: the embeddings of
        the reference's tiles (resized to the canvas), or CDM draws at ``level`` for the level-``level`` patches
        covering the canvas, each ``g x g`` grid bilinearly upsampled to the tiles it covers."""
        size, device = self.patch_size, self._execution_device
        if reference is not None:
            reference = F.interpolate(reference, size=(rows * size, cols * size), mode="bicubic", align_corners=False)
            embeddings = self.ssl_encoder(split_tiles(reference.clamp(-1, 1), size).to(device, self.ssl_encoder.dtype))
            return embeddings.float().reshape(rows, cols, -1).permute(2, 0, 1)
        cells, side = 2**level, grid_side(level, self.max_grid)
        patch_rows, patch_cols = -(-rows // cells), -(-cols // cells)
        tokens, _ = self.sample_conditions(level, patch_rows * patch_cols, generator, num_inference_steps)
        grids = tokens[:, : side * side].reshape(patch_rows, patch_cols, side, side, -1)
        field = grids.permute(4, 0, 2, 1, 3).reshape(1, -1, patch_rows * side, patch_cols * side)
        field = F.interpolate(field, size=(patch_rows * cells, patch_cols * cells), mode="bilinear", align_corners=False)
        return field[0, :, :rows, :cols]

    def window_tokens(self, field: torch.Tensor, windows: list[tuple[int, int]], level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning tokens of the level-``level`` windows at latent offsets ``windows`` of a canvas: each window
        covers ``2^level`` tiles per side of ``field`` (``(D, rows, cols)``); its ``g x g`` tokens are the field
        bilinearly sampled at the centres of the ``g x g`` sub-cells, so a window between grid cells gets the
        interpolated embedding (the official sampler interpolates between the 4 nearest cells), and an aligned
        window gets exactly the pooled sub-grid it was trained on (for ``2^level / g`` in {1, 2})."""
        max_grid, (dim, rows, cols) = self.max_grid, field.shape
        side, extent = grid_side(level, max_grid), 2**level
        offsets = (torch.arange(side, dtype=torch.float32) + 0.5) * extent / side
        starts = torch.tensor(windows, dtype=torch.float32) * extent / self.window  # (n, 2) in tile units
        ys = (starts[:, 0, None, None] + offsets[None, :, None]).expand(-1, side, side)
        xs = (starts[:, 1, None, None] + offsets[None, None, :]).expand(-1, side, side)
        grid = torch.stack([2 * xs / cols - 1, 2 * ys / rows - 1], dim=-1).to(field.device, field.dtype)
        sampled = F.grid_sample(field[None].expand(len(windows), -1, -1, -1), grid, mode="bilinear",
                                padding_mode="border", align_corners=False)  # (n, D, side, side)
        tokens = torch.zeros(len(windows), max_grid * max_grid, dim, device=field.device, dtype=field.dtype)
        tokens[:, : side * side] = sampled.flatten(2).transpose(1, 2)
        mask = (torch.arange(max_grid * max_grid, device=field.device) < side * side).expand(len(windows), -1)
        return tokens, mask

    def windowed_clean(
        self,
        latents: torch.Tensor,
        timestep,
        windows: list[tuple[int, int]],
        context: torch.Tensor,
        guidance_scale: float,
        batch_size: int,
    ) -> torch.Tensor:
        """The clean estimate of a ``(1, C, H, W)`` latent canvas: every overlapping window predicts
        ``z0_w = (z_t,w - sqrt(1 - a_t) eps_theta(z_t,w, t, c_w)) / sqrt(a_t)`` (:meth:`to_clean`) and the canvas
        takes the average of the windows covering each latent pixel (the official sliding-window sampler),
        ``batch_size`` windows at a time."""
        alpha = self.scheduler.alphas_cumprod[int(timestep)].to(latents.device, torch.float32)
        size, count = self.window, len(windows)
        crops = torch.cat([latents[:, :, top : top + size, left : left + size] for top, left in windows])
        total, weight = torch.zeros_like(latents, dtype=torch.float32), torch.zeros_like(latents[:, :1], dtype=torch.float32)
        for start in range(0, count, batch_size):
            chunk = slice(start, min(start + batch_size, count))
            chunk_context = context[chunk] if guidance_scale == 1.0 else torch.cat([context[chunk], context[count:][chunk]])
            output = self.predict_noise(crops[chunk], timestep, chunk_context, guidance_scale)
            clean = self.to_clean(output, crops[chunk], alpha)
            for (top, left), window_clean in zip(windows[chunk], clean):
                total[0, :, top : top + size, left : left + size] += window_clean
                weight[0, :, top : top + size, left : left + size] += 1
        return total / weight

    def decode_canvas(self, latents: torch.Tensor, stride: int, batch_size: int) -> torch.Tensor:
        """Decode a ``(N, C, H, W)`` latent canvas in overlapping ``P x P`` windows (latent stride ``stride``) blended
        with the Gaussian weight :func:`gaussian_window`: ``X = sum_w k D(z_w) / sum_w k`` (the official large-image
        decoder). Differentiable; ``batch_size`` windows are decoded at a time."""
        windows = canvas_windows(latents.shape[-2:], self.window, stride)
        kernel = gaussian_window(self.patch_size).to(latents.device)
        image = latents.new_zeros(len(latents), 3, *(side * self.latent_factor for side in latents.shape[-2:])).float()
        weight = torch.zeros_like(image[:1, :1])
        for chunk in chunked(windows, batch_size):
            decoded = self.decode_latents(torch.cat([self.crop(latents, window) for window in chunk]))
            for index, window in enumerate(chunk):
                pixels = self.pixel_slice(window)
                image[pixels] = image[pixels] + decoded[index * len(latents) : (index + 1) * len(latents)] * kernel
                weight[pixels] += kernel
        return image / weight

    def decode_canvas_vjp(self, latents: torch.Tensor, upstream: torch.Tensor, stride: int, batch_size: int) -> torch.Tensor:
        """``J^T u``: the gradient of ``<decode_canvas(z), u>`` with respect to ``z``, computed ``batch_size`` windows
        at a time (the blend ``X = sum_w k D(z_w) / sum_w k`` is linear in each window's decode, so window ``w``
        receives ``J_D(z_w)^T (k u_w / sum k)``); memory is that of one chunk, whatever the canvas size."""
        windows = canvas_windows(latents.shape[-2:], self.window, stride)
        kernel = gaussian_window(self.patch_size).to(latents.device)
        weight = torch.zeros_like(upstream[:1, :1])
        for window in windows:
            weight[self.pixel_slice(window)] += kernel
        weighted = upstream / weight
        gradient = torch.zeros_like(latents, dtype=torch.float32)
        for chunk in chunked(windows, batch_size):
            with torch.enable_grad():
                crops = torch.cat([self.crop(latents, window) for window in chunk]).detach().float().requires_grad_(True)
                decoded = self.decode_latents(crops)
                targets = torch.cat([weighted[self.pixel_slice(window)] * kernel for window in chunk])
                (crop_gradient,) = torch.autograd.grad((decoded * targets).sum(), crops)
            for index, (top, left) in enumerate(chunk):
                size = self.window
                gradient[:, :, top : top + size, left : left + size] += crop_gradient[index * len(latents) : (index + 1) * len(latents)]
        return gradient

    @property
    def default_shift_average(self) -> bool:
        """Whether final decodes are shift-averaged by default (:meth:`shift_average`): for a :class:`ZoomAutoencoder`,
        whose linear patch code decodes every latent pixel into an ``f x f`` block."""
        return isinstance(self.vae, ZoomAutoencoder)

    def shift_average(self, image: torch.Tensor, tile: int = 128, margin: int = 32) -> torch.Tensor:
        """Cycle spinning (Coifman & Donoho 1995) of a decoded ``(N, 3, H, W)`` canvas through the autoencoder,

            ``X' = 1/f^2 sum_{0 <= dy, dx < f} S_{-d} D(E(S_d X))``,

        ``S_d`` a shift by ``d = (dy, dx)`` pixels (reflect padding), ``f`` the latent factor, each shifted canvas
        round-tripped by :meth:`local_round_trip`. A patch autoencoder renders the denoiser's independent per-latent
        errors as ``f x f`` blocks, a grid on every ``f``-th pixel line; re-encoding at every phase of that grid and
        averaging spreads it evenly over all lines (a departure: the official decoder blends latent-aligned windows
        only)."""
        factor, (height, width) = self.latent_factor, image.shape[-2:]
        padded = F.pad(image, (factor,) * 4, mode="reflect")
        total = torch.zeros_like(image)
        for dy in range(factor):
            for dx in range(factor):
                top, left = factor - dy, factor - dx
                shifted = padded[:, :, top : top + height + factor, left : left + width + factor]
                total += self.local_round_trip(shifted, tile, margin)[:, :, dy : dy + height, dx : dx + width]
        return total / factor**2

    def local_round_trip(self, pixels: torch.Tensor, tile: int = 128, margin: int = 32) -> torch.Tensor:
        """``D(E(pixels))`` of a canvas whose sides are multiples of ``f``, computed ``tile x tile`` pixels at a time,
        each piece encoded and decoded with ``margin`` pixels of context on every side (``tile`` and ``margin``
        multiples of ``f``), so memory is one piece's whatever the canvas. It equals one pass over the whole canvas
        when the autoencoder's receptive field is below ``margin``: a :class:`ZoomAutoencoder` (about 26 px at f4;
        a test checks it), not an ``AutoencoderKL`` (GroupNorm and attention see the whole input)."""
        factor, (height, width) = self.latent_factor, pixels.shape[-2:]
        if tile % factor or margin % factor:
            raise ValueError(f"tile ({tile}) and margin ({margin}) must be multiples of the latent factor {factor}")
        output = torch.empty_like(pixels)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                rows = slice(max(0, top - margin), min(height, top + tile + margin))
                cols = slice(max(0, left - margin), min(width, left + tile + margin))
                piece = self.decode_latents(self.encode_latents(pixels[:, :, rows, cols]))
                up, side = top - rows.start, left - cols.start
                output[:, :, top : top + tile, left : left + tile] = piece[:, :, up : up + tile, side : side + tile]
        return output

    def final_decode(
        self, latents: torch.Tensor, stride: int, batch_size: int, shift_average: bool | None
    ) -> torch.Tensor:
        """:meth:`decode_canvas`, then :meth:`shift_average` when ``shift_average`` (``None``:
        :attr:`default_shift_average`)."""
        image = self.decode_canvas(latents, stride, batch_size)
        average = self.default_shift_average if shift_average is None else shift_average
        return self.shift_average(image.clamp(-1, 1)) if average else image

    def crop(self, latents: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
        top, left = window
        return latents[:, :, top : top + self.window, left : left + self.window]

    def pixel_slice(self, window: tuple[int, int]) -> tuple[slice, ...]:
        top, left = (offset * self.latent_factor for offset in window)
        return (slice(None), slice(None), slice(top, top + self.patch_size), slice(left, left + self.patch_size))

    def coupling_step(
        self,
        high: torch.Tensor,
        low: torch.Tensor | None,
        target: torch.Tensor | None,
        factor: int,
        coupling_scale: float,
        stride: int,
        batch_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The paper's cross-magnification guidance on the clean estimates: one gradient step on

            ``L = 1/2 || A(D(z0_high)) - y ||^2``,  ``y = D(z0_low)`` (joint sampling) or the fixed ``target`` (SR)

        (``D``: :meth:`decode_canvas`, ``A``: area downsampling by ``factor``) of Polyak size
        ``z0' = z0 - s L / ||grad L||^2 grad L`` (``s = coupling_scale``), with respect to both canvases when
        ``low`` is sampled (both scales move towards each other). The gradient is the exact one, taken chunk by
        chunk (:meth:`decode_canvas_vjp`): ``dL/dX_high = U(r) / factor^2`` and ``dL/dX_low = -r`` with
        ``r = A(X_high) - y`` and ``U`` nearest upsampling (the adjoint of ``A`` up to ``factor^2``)."""
        image = self.decode_canvas(high, stride, batch_size)
        reference = target if low is None else self.decode_canvas(low, stride, batch_size)
        residual = F.avg_pool2d(image, factor) - reference
        loss = 0.5 * residual.pow(2).sum()
        upstream = F.interpolate(residual, scale_factor=factor, mode="nearest") / factor**2
        gradients = [self.decode_canvas_vjp(high, upstream, stride, batch_size)]
        if low is not None:
            gradients.append(self.decode_canvas_vjp(low, -residual, stride, batch_size))
        step = coupling_scale * loss / sum(g.pow(2).sum() for g in gradients).clamp_min(1e-12)
        high = high - step * gradients[0]
        return high, (None if low is None else low - step * gradients[1])

    def check_canvas(self, height: int, width: int, name: str = "height and width") -> int:
        """The coarsest trained level ``L`` whose view of a ``height x width`` image is at least one patch and on the
        latent grid; ``height`` and ``width`` must be multiples of ``P`` and at least ``2P``."""
        size = self.patch_size
        if height % size or width % size or min(height, width) < 2 * size:
            raise ValueError(f"{name} must be multiples of {size} (patch_size) and at least {2 * size}, got {height}x{width}")
        level = 1
        while (
            level + 1 < self.num_levels
            and min(height, width) >= size * 2 ** (level + 1)
            and height % (self.latent_factor * 2 ** (level + 1)) == 0
            and width % (self.latent_factor * 2 ** (level + 1)) == 0
        ):
            level += 1
        return level

    def canvas_contexts(self, field: torch.Tensor, windows, level: int, guidance_scale: float) -> torch.Tensor:
        tokens, mask = self.window_tokens(field, windows, level)
        return self.context(tokens, mask, level, guidance_scale)

    @torch.no_grad()
    def generate_large_image(
        self,
        height: int = 128,
        width: int = 128,
        reference_image: np.ndarray | torch.Tensor | None = None,
        coupling: str = "guidance",
        coupling_scale: float = 1.0,
        window_stride: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        batch_size: int = 16,
        shift_average: bool | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> LargeImageOutput | tuple:
        """One ``height x width`` image at the highest magnification by joint multi-scale sliding-window sampling.

        Two latent canvases are denoised together: the level-0 canvas (``H/f x W/f``) and the level-``L`` view
        (``H/(f 2^L) x W/(f 2^L)``, ``L`` the coarsest trained level that fits, :meth:`check_canvas`). At every DDIM
        step each canvas is cut into overlapping windows of one patch (stride ``window_stride`` latent pixels,
        default :attr:`odd_stride`, 3 for 8-latent windows, chosen on validation seeds over the half window (4) and
        the official quarter (2), whose even offsets stack the token-grid artifacts), every window predicts its clean
        estimate with its own context (embeddings interpolated between grid cells, :meth:`window_tokens`), the
        estimates are averaged per canvas (:meth:`windowed_clean`), the two canvases are coupled by
        :meth:`coupling_step` (``coupling="guidance"``; ``"none"`` skips it) and the step continues from the coupled
        estimates. Decoding uses overlapping Gaussian-blended windows, then (``shift_average``, default for a
        :class:`ZoomAutoencoder`) :meth:`shift_average` against the patch decoder's ``f``-pixel block grid.
        ``window_stride = P/f`` (disjoint windows) with ``coupling="none"`` is naive tiling.
        Memory is bounded by ``batch_size`` windows, not by the image size.

        Args:
            reference_image: ``(1, S, S, 3)`` in ``[0, 1]`` whose level-0 tile embeddings condition the image;
                otherwise the CDM samples the embedding field at level ``L``.

        Returns ``images`` and ``views`` (the jointly sampled level-``L`` view)."""
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
        check_output_type(output_type)
        level = self.check_canvas(height, width)
        stride = self.check_window_stride(window_stride, self.odd_stride)
        factor, rows, cols = 2**level, height // self.patch_size, width // self.patch_size
        reference = None if reference_image is None else images_to_pixels(reference_image, "reference_image")
        field = self.embedding_field(reference, rows, cols, level, generator, num_inference_steps)
        shapes = [(height // self.latent_factor, width // self.latent_factor)]
        shapes.append((shapes[0][0] // factor, shapes[0][1] // factor))
        windows = [canvas_windows(shape, self.window, stride) for shape in shapes]
        contexts = [self.canvas_contexts(field, windows[i], (0, level)[i], guidance_scale) for i in range(2)]
        alphas = self.scheduler.alphas_cumprod
        channels = self.denoiser.config.in_channels

        def predict(packed: torch.Tensor, timestep) -> torch.Tensor:
            canvases = unpack(packed, shapes, channels)
            clean = [
                self.windowed_clean(z, timestep, w, c, guidance_scale, batch_size)
                for z, w, c in zip(canvases, windows, contexts)
            ]
            if coupling == "guidance":
                clean = list(self.coupling_step(clean[0], clean[1], None, factor, coupling_scale, stride, batch_size))
            alpha = alphas[int(timestep)].to(packed.device, torch.float32)
            return pack([self.from_clean(x0, z, alpha) for z, x0 in zip(canvases, clean)]).to(packed.dtype)

        size = sum(channels * h * w for h, w in shapes)
        latents = self.prepare_latents((1, size), self.denoiser.dtype, generator)
        high, low = unpack(self.denoise(latents, num_inference_steps, predict, generator), shapes, channels)
        image, view = (self.final_decode(z, stride, batch_size, shift_average).clamp(-1, 1) for z in (high, low))
        output = self.finish(image, output_type, return_dict)
        views = postprocess_images(view, output_type)
        return LargeImageOutput(images=output.images, views=views) if return_dict else (output[0], views)

    def check_window_stride(self, window_stride: int | None, default: int | None = None) -> int:
        """``window_stride``, or ``default`` (half a window unless given) when it is ``None``."""
        stride = (default or self.window // 2) if window_stride is None else window_stride
        if not isinstance(stride, int) or not 1 <= stride <= self.window:
            raise ValueError(f"window_stride must be an int in [1, {self.window}] (latent pixels), got {window_stride!r}")
        return stride

    # ------------------------------------------------------------------ super-resolution

    def invert_condition(
        self,
        low_latents: torch.Tensor,
        field: torch.Tensor,
        level: int,
        windows: list[tuple[int, int]],
        steps: int,
        learning_rate: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, list[float]]:
        """Condition inversion: the embedding field ``s`` that best explains the low-resolution image under the
        model at its magnification ``level``,

            ``s* = argmin_s E_{t, eps} || eps - eps_theta(sqrt(a_t) z_w + sqrt(1 - a_t) eps, t, c(s_w, level)) ||^2``

        over the level-``level`` windows ``z_w`` of the encoded input (the denoising loss of textual inversion,
        optimised over the SSL conditioning instead of a word embedding), by Adam from ``field``. Returns the
        inverted field and the loss per step (for a fixed noise draw per step)."""
        field, low_latents = field.detach().clone().requires_grad_(True), low_latents.detach()
        optimizer = torch.optim.Adam([field], lr=learning_rate)
        timesteps = self.scheduler.config.num_train_timesteps
        losses = []
        for _ in range(steps):
            noise = torch.randn(low_latents.shape, generator=generator).to(low_latents.device)
            t = torch.randint(0, timesteps, (len(low_latents),), generator=generator).to(low_latents.device)
            noisy = self.scheduler.add_noise(low_latents, noise, t)
            with torch.enable_grad():
                tokens, mask = self.window_tokens(field, windows, level)
                context = self.context(tokens, mask, level, 1.0)
                prediction = self.denoise_with_context(noisy, t, context)
                loss = F.mse_loss(prediction.float(), diffusion_target(self.scheduler, low_latents, noise, t))
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return field.detach(), losses

    @torch.no_grad()
    def super_resolve(
        self,
        low_res: np.ndarray | torch.Tensor,
        scale: int = 4,
        coupling_scale: float = 1.0,
        data_consistency: bool = True,
        inversion_steps: int = 30,
        inversion_learning_rate: float = 0.05,
        strength: float = 1.0,
        sr_guidance: str = "clean_gradient",
        guidance_iterations: int = 1,
        window_stride: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        batch_size: int = 16,
        shift_average: bool | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """``low_res`` numpy ``(N, h, w, 3)`` in ``[0, 1]`` -> ``(N, scale h, scale w, 3)`` (the paper's SR).

        The input ``y`` is a level-``L`` view (``2^L = scale``) of the output. 1. **Condition inversion**
        (:meth:`invert_condition`): starting from the SSL embeddings of the bicubic-upsampled input's tiles, the
        embedding field is optimised (``inversion_steps`` Adam steps) so that the model's denoising loss on ``y``'s
        level-``L`` windows is minimal. 2. The level-0 canvas is sampled from pure noise with sliding windows
        conditioned on the inverted field, pulled towards the input at every step by ``sr_guidance``:
        ``"noisy_projection"`` (the official SR notebook's placement) adds the encoder push-forward of the
        data-consistency correction to the *noisy* latent, ``z_t <- z_t + s sqrt(a_t) (E(X') - E(X))`` with
        ``X = D(z0)`` and ``X'`` its back-projection onto ``y`` (:meth:`consistency_direction`; ``s =
        coupling_scale``), and re-predicts ``z0`` from the corrected ``z_t`` (``guidance_iterations`` times; the
        notebook uses 5 with a max-normalised step); ``"clean_gradient"`` (default, a departure) is the large-image
        coupling's Polyak gradient step on ``z0`` through the decoder, ``L = 1/2 ||A(D(z0)) - y||^2``
        (:meth:`coupling_step`; ``guidance_iterations`` steps); ``"none"`` skips it. Chosen per denoiser on validation
        crops (docs/zoomldm.md): ``clean_gradient`` for the bundled DiT models (+1.1-1.4 dB), ``noisy_projection``
        for a v-prediction UNet (+1.6 dB; the decoder gradient adds high frequencies there). The sample is decoded
        by :meth:`final_decode` (``shift_average``, default for a :class:`ZoomAutoencoder`: retina validation, one
        draw +3.0 dB). 3. ``data_consistency`` back-projects the decoded output onto the input
        (:func:`match_low_frequencies`), so that ``A(output) = y`` up to clamping (ours; the notebook has no final
        projection).
        ``strength < 1`` (a departure, "come closer, diffuse faster", Chung et al. 2022): the reverse process starts
        at the ``int(strength * num_inference_steps)``-th last timestep ``t_0`` from the forward-diffused encoding of
        the bicubic upsampling back-projected onto ``y``, ``z_t0 = sqrt(a_t0) E(B) + sqrt(1 - a_t0) eps`` (diffusers'
        img2img ``strength``), instead of pure noise (``strength = 1``, the paper).
        ``h`` and ``w`` must be multiples of ``P / scale`` and at least ``P``; ``scale`` a power of two below
        ``2^num_levels``."""
        if scale < 2 or scale & (scale - 1) or scale >= 2**self.num_levels:
            raise ValueError(f"scale must be a power of two in [2, {2 ** (self.num_levels - 1)}], got {scale}")
        first_step = self.strength_first_step(num_inference_steps, strength)
        pixels = images_to_pixels(low_res, "low_res").to(self._execution_device)
        step = self.patch_size // scale
        if pixels.shape[-2] % step or pixels.shape[-1] % step or min(pixels.shape[-2:]) < self.patch_size:
            raise ValueError(
                f"low_res height and width must be multiples of {step} (patch_size / scale) and at least "
                f"{self.patch_size} (patch_size), got {tuple(pixels.shape[-2:])}"
            )
        check_output_type(output_type)
        stride = self.check_window_stride(window_stride)
        if sr_guidance not in SR_GUIDANCES:
            raise ValueError(f"sr_guidance must be one of {SR_GUIDANCES}, got {sr_guidance!r}")
        check_positive_int(guidance_iterations, "guidance_iterations")
        level = scale.bit_length() - 1
        images = [
            self.super_resolve_one(image[None], scale, level, stride, coupling_scale, inversion_steps,
                                   inversion_learning_rate, num_inference_steps, first_step, guidance_scale, batch_size,
                                   generator, sr_guidance, guidance_iterations, shift_average)
            for image in pixels
        ]
        image = torch.cat(images)
        if data_consistency:
            image = match_low_frequencies(image, pixels)
        return self.finish(image.clamp(-1, 1), output_type, return_dict)

    def strength_first_step(self, num_inference_steps: int, strength: float) -> int:
        """The index of the first of the last ``int(strength * num_inference_steps)`` timesteps of the schedule."""
        check_positive_int(num_inference_steps, "num_inference_steps")
        count = int(strength * num_inference_steps) if 0 < strength <= 1 else 0
        if count < 1:
            raise ValueError(
                f"strength must be in (0, 1] with int(strength * num_inference_steps) >= 1, got strength={strength!r} "
                f"and num_inference_steps={num_inference_steps}"
            )
        return num_inference_steps - count

    def consistency_direction(self, clean: torch.Tensor, target: torch.Tensor, stride: int, batch_size: int) -> torch.Tensor:
        """The latent change that makes the decoded clean estimate consistent with the low-resolution ``target``,
        pushed through the encoder (the official SR's direction): ``E(X') - E(X)`` with ``X = D(z0)`` (blended
        windows) and ``X'`` its data-consistency projection (:func:`match_low_frequencies`)."""
        image = self.decode_canvas(clean, stride, batch_size).clamp(-1, 1)
        projected = match_low_frequencies(image, target)
        return self.encode_canvas(projected) - self.encode_canvas(image)

    def encode_canvas(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` pixels -> the ``(N, C, H/f, W/f)`` latent canvas of their disjoint ``P x P`` tiles."""
        rows, cols = pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size
        return assemble_tiles(self.encode_latents(split_tiles(pixels, self.patch_size)).float(), rows, cols)

    def super_resolve_one(
        self, pixels, scale, level, stride, coupling_scale, inversion_steps, learning_rate, steps, first_step,
        guidance_scale, batch_size, generator, sr_guidance="clean_gradient", guidance_iterations=1, shift_average=None,
    ) -> torch.Tensor:
        """One ``(1, 3, h, w)`` input -> ``(1, 3, scale h, scale w)`` before data consistency."""
        height, width = pixels.shape[-2] * scale, pixels.shape[-1] * scale
        rows, cols = height // self.patch_size, width // self.patch_size
        upsampled = F.interpolate(pixels, scale_factor=scale, mode="bicubic", align_corners=False)
        field = self.embedding_field(upsampled, rows, cols, 0, generator, steps)
        factor = self.latent_factor
        low_windows = canvas_windows((pixels.shape[-2] // factor, pixels.shape[-1] // factor), self.window, stride)
        low_latents = torch.cat([
            self.encode_latents(pixels[:, :, top * factor : top * factor + self.patch_size,
                                       left * factor : left * factor + self.patch_size])
            for top, left in low_windows
        ]).float()
        if inversion_steps:
            field, _ = self.invert_condition(low_latents, field, level, low_windows, inversion_steps, learning_rate, generator)
        shape = (height // factor, width // factor)
        windows = canvas_windows(shape, self.window, stride)
        context = self.canvas_contexts(field, windows, 0, guidance_scale)
        alphas = self.scheduler.alphas_cumprod

        def predict(latents: torch.Tensor, timestep) -> torch.Tensor:
            alpha = alphas[int(timestep)].to(latents.device, torch.float32)
            clean = self.windowed_clean(latents, timestep, windows, context, guidance_scale, batch_size)
            if sr_guidance == "clean_gradient":
                for _ in range(guidance_iterations):
                    clean, _ = self.coupling_step(clean, None, pixels, scale, coupling_scale, stride, batch_size)
            elif sr_guidance == "noisy_projection":
                corrected = latents.float()
                for _ in range(guidance_iterations):
                    corrected = corrected + coupling_scale * alpha.sqrt() * self.consistency_direction(clean, pixels, stride, batch_size)
                    clean = self.windowed_clean(corrected, timestep, windows, context, guidance_scale, batch_size)
            return self.from_clean(clean, latents, alpha).to(latents.dtype)

        latents = self.prepare_latents((1, self.denoiser.config.in_channels, *shape), self.denoiser.dtype, generator)
        if first_step:  # strength < 1: start from the diffused bicubic estimate
            self.scheduler.set_timesteps(steps, device=self._execution_device)
            start = self.encode_canvas(match_low_frequencies(upsampled.clamp(-1, 1), pixels))
            latents = self.scheduler.add_noise(start.to(latents.dtype), latents, self.scheduler.timesteps[first_step : first_step + 1])
        latents = self.denoise(latents, steps, predict, generator, first_step=first_step)
        return self.final_decode(latents, stride, batch_size, shift_average)


def diffusion_target(scheduler, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the denoiser regresses under ``scheduler.config.prediction_type``: the noise ``eps`` (``epsilon``) or the
    velocity ``v = sqrt(a_t) eps - sqrt(1 - a_t) x0`` (``v_prediction``, Salimans & Ho 2022)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise.float()
    if kind == "v_prediction":
        return scheduler.get_velocity(sample, noise, timesteps).float()
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {kind!r}")


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Offsets of ``window``-long windows with step ``stride`` covering ``[0, size)``, the last one flush with the end."""
    starts = list(range(0, size - window + 1, stride))
    return starts if starts[-1] == size - window else [*starts, size - window]


def canvas_windows(shape: tuple[int, int], window: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the overlapping ``window x window`` windows of a ``shape`` canvas, row-major."""
    return [(top, left) for top in window_starts(shape[0], window, stride) for left in window_starts(shape[1], window, stride)]


def gaussian_window(size: int, sigma: float = 0.8) -> torch.Tensor:
    """``k(x, y) = exp(-(x^2 + y^2) / sigma^2)`` on ``[-1, 1]^2`` sampled at ``size x size`` pixel centres (the official
    decoder's blending weight, peaked at the window centre and small, never zero, at its border)."""
    x = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    return torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / sigma**2)


def chunked(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def pack(canvases: list[torch.Tensor]) -> torch.Tensor:
    """Several ``(1, C, h, w)`` canvases as one ``(1, n)`` tensor, so that one scheduler steps them all."""
    return torch.cat([canvas.reshape(1, -1) for canvas in canvases], dim=1)


def unpack(packed: torch.Tensor, shapes: list[tuple[int, int]], channels: int) -> list[torch.Tensor]:
    sizes = [channels * h * w for h, w in shapes]
    return [part.reshape(1, channels, h, w) for part, (h, w) in zip(packed.split(sizes, dim=1), shapes)]
