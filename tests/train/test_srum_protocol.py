"""The SRUM loop runs on a unified model that shares nothing with ``UnifiedPipeline``: a diffusers
``UNet2DConditionModel`` generator with its own prompt embedding, and a separate CNN that judges."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from safetensors.torch import load_file, save_file
from torch import nn

from selfgen.train.srum import SelfRewards, SRUMConfig, SRUMTrainer, reward_maps

WORDS = {"<pad>": 0, "a": 1, "red": 2, "blue": 3, "square": 4}


class Generator(nn.Module):
    """``v_theta(x_sigma, sigma, prompt)`` from a tiny conditional UNet with cross-attention on word embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(WORDS), 16)
        self.unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16,
            attention_head_dim=4,
            norm_num_groups=4,
        )

    def forward(self, sample: torch.Tensor, sigmas: torch.Tensor, prompt_ids: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, sigmas * 1000, encoder_hidden_states=self.embed(prompt_ids)).sample


class UNetUMM:
    """A :class:`~selfgen.train.srum.SelfRewardingUMM` built from unrelated parts."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.transformer = Generator()
        self.judge = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1)).requires_grad_(False)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        ids = [[WORDS[word] for word in prompt.split()][:3] for prompt in prompts]
        return torch.tensor([row + [0] * (3 - len(row)) for row in ids])

    def velocity(self, model, sample, sigmas, prompt_ids):
        return model(sample, sigmas, prompt_ids)

    def generation_parameters(self) -> list[nn.Parameter]:
        return list(self.transformer.parameters())

    def encode_samples(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1

    @torch.no_grad()
    def generate(self, prompts, *, generator, output_type, num_inference_steps=4, guidance_scale=1.0):
        """Euler steps of ``dx/dsigma = v`` from noise (``sigma = 1``) to an image (``sigma = 0``)."""
        sample = torch.randn(len(prompts), 3, 16, 16, generator=generator)
        prompt_ids = self.encode_prompts(prompts)
        sigmas = torch.linspace(1, 0, num_inference_steps + 1)
        for sigma, following in zip(sigmas[:-1], sigmas[1:]):
            sample = sample + (following - sigma) * self.transformer(sample, sigma.repeat(len(prompts)), prompt_ids)
        images = ((sample.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        return ImagePipelineOutput(images=images)


HALVES = [(slice(None), slice(0, 8)), (slice(None), slice(8, 16))]  # this world's layout: left and right halves


def judge_rewards(umm: UNetUMM, images: np.ndarray, prompts: list[str]) -> SelfRewards:
    """The separate judge's per-pixel logits pooled into a global reward and two half-image rewards (a layout
    of its own, not the shapes world's quadrants)."""
    logits = umm.judge(torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1)[:, 0]
    halves = torch.stack([logits[:, rows, cols].mean((1, 2)) for rows, cols in HALVES], 1)
    scores, global_reward = torch.tanh(halves).numpy(), torch.tanh(logits.mean((1, 2))).numpy()
    occupied = np.ones_like(scores)
    maps = reward_maps(global_reward, scores, occupied, (16, 16), "both", HALVES)
    return SelfRewards(global_reward, scores, maps, occupied)


def save_generator(module: nn.Module, directory) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(module.state_dict(), str(directory / "generator.safetensors"))


def test_one_round_on_a_unet_generator_with_a_separate_judge(tmp_path):
    umm = UNetUMM()
    start = {name: param.clone() for name, param in umm.transformer.state_dict().items()}
    judge = {name: param.clone() for name, param in umm.judge.state_dict().items()}
    config = SRUMConfig(
        pretrained=None,
        output_dir=str(tmp_path / "run"),
        num_rounds=1,
        prompts_per_round=4,
        num_inference_steps=2,
        max_train_steps=2,
        train_batch_size=2,
        learning_rate=1e-2,
        checkpointing_steps=0,
        report_to=None,
    )
    trainer = SRUMTrainer(
        umm,
        config,
        sample_prompt=lambda rng: rng.choice(["a red square", "a blue square"]),
        reward_fn=judge_rewards,
        export_fn=save_generator,
        evaluate_fn=lambda model: {"mean_pixel": float(model.generate(["a red square"], generator=None, output_type="np").images.mean())},
    )
    result = trainer.train()
    tuned = umm.transformer.state_dict()
    assert any(not torch.equal(start[name], tuned[name]) for name in start)  # the generator learned
    assert all(torch.equal(judge[name], param) for name, param in umm.judge.state_dict().items())  # the judge did not
    exported = load_file(str(result.pipeline_dir / "generator.safetensors"))
    assert all(torch.equal(exported[name], tuned[name]) for name in tuned)  # memory == export, bit for bit
    history = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [record["round"] for record in history] == [0, 1] and "mean_pixel" in history[1]
    assert np.isfinite(history[1]["loss"]) and history[1]["reward_map_mean"] > 0


def test_reward_map_follows_the_layout_the_world_passes_in():
    global_reward, scores = np.ones(1, dtype=np.float32), np.array([[1.0, -1.0]], dtype=np.float32)
    maps = reward_maps(global_reward, scores, np.ones_like(scores), (16, 16), "both", HALVES)
    assert (maps[0, :, :8] == 1).all() and (maps[0, :, 8:] == 0).all()  # left half rewarded, right half not
    with pytest.raises(ValueError, match="regions has 2 entries"):
        reward_maps(global_reward, np.zeros((1, 4), np.float32), np.ones((1, 4), np.float32), (16, 16), "both", HALVES)
