"""ZoomLDM pipeline: magnification-aware latent diffusion, large images by joint multi-scale sampling, 4x SR.

Patches are ``P x P`` (32) images at magnification level ``k`` (0 = highest magnification; a level-``k``
patch covers ``P 2^k`` source pixels). Sampling one patch:

1. conditioning ``s``: the SSL embeddings of the reference region's level-0 sub-patches pooled to a
   ``g x g`` grid (``g = min(2^k, G)``), or, with no reference, ``s_0`` drawn from the conditioning
   diffusion model ``eps_phi(s_t, t, k)`` (the paper's CDM);
2. ``c = summarizer(s, k)``; DDIM in the VAE latent space with ``eps_theta(z_t, t, c)`` (classifier-free
   guidance ``eps_u + w (eps_c - eps_u)`` when ``guidance_scale = w != 1``); ``x = D(z_0 / sf)``.

**Joint multi-scale sampling** (:meth:`generate_large_image`): an ``H x W = P 2^L`` image is ``2^L x 2^L``
level-0 tiles plus one level-``L`` view of the same region, denoised together in one batch. As in the
paper, they are coupled by gradient guidance at every step (:meth:`guided_noise`): the clean estimates
``z0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)`` are decoded, the loss
``L = 1/2 ||A(D(z0_tiles)) - D(z0_view)||^2`` (``A`` = ``2^L`` area downsampling) is differentiated with
respect to the latents, ``z0`` takes a gradient step and the DDIM step continues from it. ``coupling="none"``
is naive tiling (tiles sampled independently); ``coupling="projection"`` is an ablation that replaces the
gradient step by an explicit back-projection of the decoded estimates (:meth:`projected_noise`).

**Super-resolution** (:meth:`super_resolve`): the same guidance with the low-magnification image fixed to
the low-resolution input (``L = 1/2 ||A(D(z0)) - y||^2``), tiles conditioned on the SSL embeddings of the
bicubic-upsampled input, and a final data-consistency step (:func:`match_low_frequencies`) so that the
output downsamples exactly to the input.

Departures (see ``docs/zoomldm.md``): the gradient is taken with respect to the clean latent estimate
(through the decoder only) rather than the noisy latent (through the denoiser too), with a Polyak step size;
tiles are decoded one by one (the small VAE only reconstructs ``P x P`` patches well).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ImagePipelineOutput, SchedulerMixin
from diffusers.utils import BaseOutput

from ..data.validation import check_positive_int, images_to_tensor
from ..models.zoomldm import (
    ZoomEmbeddingDiffusion,
    ZoomLDMDenoiser,
    ZoomSSLEncoder,
    full_grid_to_tokens,
    grid_side,
)
from .pipeline_utils import SelfgenPipeline, check_output_type, postprocess_images

COUPLINGS = ("guidance", "projection", "none")


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

    model_cpu_offload_seq = "ssl_encoder->embedding_model->denoiser->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        vae: AutoencoderKL,
        denoiser: ZoomLDMDenoiser,
        ssl_encoder: ZoomSSLEncoder,
        embedding_model: ZoomEmbeddingDiffusion,
        scheduler: SchedulerMixin,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae, denoiser=denoiser, ssl_encoder=ssl_encoder, embedding_model=embedding_model, scheduler=scheduler
        )

    # ------------------------------------------------------------------ pieces

    @property
    def patch_size(self) -> int:
        return self.denoiser.config.image_patch_size

    @property
    def num_levels(self) -> int:
        return self.denoiser.config.num_levels

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
        size, cells, max_grid = self.patch_size, 2**magnification, self.denoiser.config.max_grid
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
        context = self.denoiser.summarize(tokens.to(device), mask.to(device), levels)
        if guidance_scale == 1.0:
            return context
        null = self.denoiser.summarize(tokens.to(device), mask.to(device), levels, torch.ones_like(levels, dtype=torch.bool))
        return torch.cat([context, null])

    def predict_noise(self, latents: torch.Tensor, timestep, context: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        if guidance_scale == 1.0:
            return self.denoiser.denoise_with_context(latents, timestep, context)
        both = self.denoiser.denoise_with_context(torch.cat([latents, latents]), timestep, context)
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

    # ------------------------------------------------------------------ joint multi-scale sampling

    def decode_tiles(self, latents: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """Decode ``(N rows cols, C, s, s)`` tile latents one tile at a time (the ``P x P`` size the VAE was trained
        on) and assemble them into ``(N, 3, rows P, cols P)``. Decoding the assembled latent whole, or in
        overlapping windows as the authors' large-image decoder does, reconstructs ~10x worse with this small
        VAE (its attention, GroupNorm and zero padding only ever saw ``P x P`` patches)."""
        return assemble_tiles(self.decode_latents(latents), rows, cols)

    def encode_tiles(self, images: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`decode_tiles`: encode the ``P x P`` tiles of ``(N, 3, H, W)`` images one by one."""
        return self.encode_latents(split_tiles(images, self.patch_size))

    def guided_noise(
        self,
        predict: Callable,
        num_tiles: int,
        rows: int,
        cols: int,
        low_image: Callable[[torch.Tensor], torch.Tensor],
        coupling_scale: float,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The paper's coupling, gradient guidance at every step: wrap ``predict(z, t) -> eps`` over
        ``[tiles; views]`` latents so that the clean estimate ``z0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)`` takes
        one gradient step on

            ``L(z0) = 1/2 || A(D(z0_tiles)) - low_image(z0_views) ||^2``

        (``D``: the VAE decoder, tile by tile; ``A``: area downsampling to the view's size), of Polyak size
        ``z0' = z0 - s L / ||grad L||^2 grad L`` (``s = coupling_scale``; ``s = 1`` would zero the linearised
        loss), and the step continues with ``eps' = (z_t - sqrt(a_t) z0') / sqrt(1 - a_t)``. When ``low_image``
        decodes the views, the gradient steers the views too: both scales are pulled towards each other."""
        alphas = self.scheduler.alphas_cumprod

        def guided(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            eps = predict(latents, timestep)
            alpha = alphas[int(timestep)].to(latents.device, torch.float32)
            clean = ((latents - (1 - alpha).sqrt() * eps) / alpha.sqrt()).float()
            with torch.enable_grad():
                clean.requires_grad_(True)
                image = self.decode_tiles(clean[:num_tiles], rows, cols)
                low = low_image(clean[num_tiles:])
                loss = 0.5 * (F.avg_pool2d(image, image.shape[-1] // low.shape[-1]) - low).pow(2).sum()
                (gradient,) = torch.autograd.grad(loss, clean)
            step = coupling_scale * loss.detach() / gradient.pow(2).sum().clamp_min(1e-12)
            guided_clean = clean.detach() - step * gradient
            return ((latents - alpha.sqrt() * guided_clean) / (1 - alpha).sqrt()).to(latents.dtype)

        return guided

    def projected_noise(
        self, predict: Callable, num_tiles: int, rows: int, cols: int
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Ablation (``coupling="projection"``, not the paper's): decode each step's clean estimates, pull the tile
        image ``X`` and the view ``v`` to ``u = (v + A(X)) / 2`` by :func:`match_low_frequencies`, re-encode to
        ``z0'`` and continue with ``eps' = (z_t - sqrt(a_t) z0') / sqrt(1 - a_t)``."""
        alphas = self.scheduler.alphas_cumprod
        cells = rows

        def projected(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            eps = predict(latents, timestep)
            alpha = alphas[int(timestep)].to(latents.device, latents.dtype)
            clean = (latents - (1 - alpha).sqrt() * eps) / alpha.sqrt()
            image = self.decode_tiles(clean[:num_tiles], rows, cols)
            shared = (self.decode_latents(clean[num_tiles:]) + F.avg_pool2d(image, cells)) / 2
            tiles = self.encode_tiles(match_low_frequencies(image, shared))
            clean = torch.cat([tiles, self.encode_latents(shared.clamp(-1, 1))]).to(latents.dtype)
            return (latents - alpha.sqrt() * clean) / (1 - alpha).sqrt()

        return projected

    def tile_contexts(self, tokens: torch.Tensor, level: int, cells: int, guidance_scale: float) -> torch.Tensor:
        """Level-0 contexts of the ``cells x cells`` tiles of each level-``level`` grid: every tile takes the
        embedding of the pooled-grid cell it lies in."""
        max_grid, side = self.denoiser.config.max_grid, grid_side(level, self.denoiser.config.max_grid)
        grid = tokens[:, : side * side].reshape(-1, side, side, tokens.shape[-1])
        index = torch.arange(cells) * side // cells
        per_tile = grid[:, index][:, :, index].reshape(-1, 1, tokens.shape[-1])
        tile_tokens = torch.zeros(len(per_tile), max_grid * max_grid, tokens.shape[-1])
        tile_tokens[:, :1] = per_tile
        mask = (torch.arange(max_grid * max_grid) < 1).expand(len(per_tile), -1)
        return self.context(tile_tokens, mask, 0, guidance_scale)

    @torch.no_grad()
    def generate_large_image(
        self,
        height: int = 128,
        width: int = 128,
        reference_image: np.ndarray | torch.Tensor | None = None,
        coupling: str = "guidance",
        coupling_scale: float = 1.0,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> LargeImageOutput | tuple:
        """One ``height x width`` image at the highest magnification, ``height = width = P 2^L`` with ``L`` a
        trained level: the level-``L`` view and its ``2^L x 2^L`` level-0 tiles are denoised in one batch.

        Args:
            coupling: ``"guidance"`` (the paper's joint multi-scale sampling, :meth:`guided_noise`, step
                ``coupling_scale``), ``"projection"`` (ablation, :meth:`projected_noise`) or ``"none"`` (naive
                tiling: the same tiles, noise and conditions sampled independently and stitched).
            reference_image: ``(1, S, S, 3)`` in ``[0, 1]`` conditioning the view; otherwise the CDM samples it.

        Returns ``images`` and ``views`` (the jointly sampled ``P x P`` level-``L`` view)."""
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
        check_output_type(output_type)
        level = self.large_image_level(height, width)
        cells, num_tiles = 2**level, 4**level
        tokens, mask = self.conditions(level, 1, reference_image, generator, num_inference_steps)
        view_context = self.context(tokens[:1], mask[:1], level, guidance_scale)
        tile_context = self.tile_contexts(tokens[:1], level, cells, guidance_scale)
        contexts = torch.cat([tile_context[:num_tiles], view_context[:1]])
        if guidance_scale != 1.0:
            contexts = torch.cat([contexts, tile_context[num_tiles:], view_context[1:]])
        predict = lambda z, t: self.predict_noise(z, t, contexts, guidance_scale)  # noqa: E731
        if coupling == "guidance":
            predict = self.guided_noise(predict, num_tiles, cells, cells, self.decode_latents, coupling_scale)
        elif coupling == "projection":
            predict = self.projected_noise(predict, num_tiles, cells, cells)
        latents = self.prepare_latents(self.latent_shape(num_tiles + 1), self.denoiser.dtype, generator)
        latents = self.denoise(latents, num_inference_steps, predict, generator)
        view = self.decode_latents(latents[num_tiles:])
        image = self.decode_tiles(latents[:num_tiles], cells, cells)
        if coupling == "projection":
            image = match_low_frequencies(image, (view + F.avg_pool2d(image, cells)) / 2)
        output = self.finish(image.clamp(-1, 1), output_type, return_dict)
        views = postprocess_images(view.clamp(-1, 1), output_type)
        return LargeImageOutput(images=output.images, views=views) if return_dict else (output[0], views)

    def large_image_level(self, height: int, width: int) -> int:
        sizes = {self.patch_size * 2**level: level for level in range(1, self.num_levels)}
        if height != width or height not in sizes:
            raise ValueError(
                f"height and width must be equal and one of {sorted(sizes)} (patch_size * 2**L for a trained level L >= 1), "
                f"got {height}x{width}"
            )
        return sizes[height]

    # ------------------------------------------------------------------ super-resolution

    @torch.no_grad()
    def super_resolve(
        self,
        low_res: np.ndarray | torch.Tensor,
        scale: int = 4,
        coupling_scale: float = 1.0,
        data_consistency: bool = True,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """``low_res`` numpy ``(N, h, w, 3)`` in ``[0, 1]`` -> ``(N, scale h, scale w, 3)``.

        Level-0 tiles conditioned on the SSL embeddings of the (bicubic-upsampled) input are sampled with the
        joint-sampling guidance of :meth:`guided_noise`, the low-magnification image held fixed at the input:
        ``L = 1/2 ||A(D(z0)) - y||^2``. ``data_consistency`` then back-projects the decoded output onto the
        input (:func:`match_low_frequencies`), so that ``A(output) = y`` up to clamping.
        ``h`` and ``w`` must be multiples of ``P / scale``; ``scale`` a power of two below ``2^num_levels``."""
        if scale < 2 or scale & (scale - 1) or scale >= 2**self.num_levels:
            raise ValueError(f"scale must be a power of two in [2, {2 ** (self.num_levels - 1)}], got {scale}")
        check_positive_int(num_inference_steps, "num_inference_steps")
        pixels = images_to_pixels(low_res, "low_res").to(self._execution_device)
        step = self.patch_size // scale
        if pixels.shape[-2] % step or pixels.shape[-1] % step or pixels.shape[-1] < step:
            raise ValueError(
                f"low_res height and width must be positive multiples of {step} (patch_size / scale), "
                f"got {tuple(pixels.shape[-2:])}"
            )
        check_output_type(output_type)
        rows, cols = pixels.shape[-2] // step, pixels.shape[-1] // step
        upsampled = F.interpolate(pixels, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)
        tokens, mask = self.embed_regions(split_tiles(upsampled, self.patch_size), 0)
        context = self.context(tokens, mask, 0, guidance_scale)
        predict = self.guided_noise(
            lambda z, t: self.predict_noise(z, t, context, guidance_scale), len(tokens), rows, cols,
            lambda views: pixels, coupling_scale,
        )
        latents = self.prepare_latents(self.latent_shape(len(tokens)), self.denoiser.dtype, generator)
        latents = self.denoise(latents, num_inference_steps, predict, generator)
        image = self.decode_tiles(latents, rows, cols)
        if data_consistency:
            image = match_low_frequencies(image, pixels)
        return self.finish(image.clamp(-1, 1), output_type, return_dict)
