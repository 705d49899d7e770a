"""Tora2Transformer: trajectory maps, fixed sin-cos positions, positional entity binding, zero-initialised gate and
fuser, modes, patches, attention backends."""

import pytest
import torch

from selfgen.models.tora import (
    GatedSelfAttention,
    PixelRefiner,
    Tora2Transformer,
    reference_alpha,
    reference_canvas,
    sincos_position_code,
    trajectory_maps,
)

TINY = dict(dim=32, num_layers=2, num_heads=2, mlp_ratio=2.0, motion_dim=8, num_appearance_tokens=2, vocab_size=20)


def tiny_model(mode="tora2", **overrides):
    torch.manual_seed(0)
    return Tora2Transformer(**{**TINY, "mode": mode, **overrides}).eval()


def inputs(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    entity_mask = torch.tensor([[True, True, False], [True, False, False]])[:batch]
    return dict(
        sample=torch.randn(batch, 8, 3, 32, 32, generator=generator),
        timestep=torch.full((batch,), 500.0),
        prompt_ids=torch.randint(1, 20, (batch, 14), generator=generator),
        trajectories=torch.rand(batch, 3, 8, 2, generator=generator),
        entity_mask=entity_mask,
        reference_images=torch.rand(batch, 3, 3, 16, 16, generator=generator) * 2 - 1,
        entity_ids=torch.randint(1, 20, (batch, 3, 3), generator=generator),
    )


def randomise_zero_layers(model):
    """Give the zero-initialised output layers (prediction head, adaLN, MGF, gates) random weights."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.abs().sum() == 0:
                param.normal_(0, 0.2)


def test_trajectory_maps_peak_at_the_point_and_carry_the_displacement():
    trajectory = torch.tensor([[[0.25, 0.5], [0.5, 0.5], [0.75, 0.5]]])
    maps = trajectory_maps(trajectory, size=16, sigma=1.0, displacement_scale=1.0)
    assert maps.shape == (1, 3, 3, 16, 16)
    presence = maps[0, 2]
    peak = presence.flatten(1).argmax(1)
    rows, cols = peak // 16, peak % 16
    assert rows.tolist() == [7, 7, 7] or rows.tolist() == [8, 8, 8]
    assert cols.tolist() in ([3, 7, 11], [4, 8, 12])
    torch.testing.assert_close(maps[0, 0].sum((1, 2)) / presence.sum((1, 2)), torch.full((3,), 0.25))
    assert maps[0, 1].abs().max() == 0  # no vertical motion


def test_video_positions_are_a_fixed_sincos_code_with_one_distinct_code_per_token():
    model = tiny_model()
    assert "video_pos" not in model.state_dict() and "video_pos" not in dict(model.named_parameters())
    grid_t, grid = model.grid
    axes = torch.meshgrid(torch.arange(grid_t), torch.arange(grid), torch.arange(grid), indexing="ij")
    positions = torch.stack(axes, dim=-1).reshape(-1, 3).float()  # (t, row, column) in patchify order
    torch.testing.assert_close(model.video_pos[0], sincos_position_code(positions, 32), rtol=0, atol=1e-6)
    distances = torch.cdist(model.video_pos[0], model.video_pos[0]) + torch.eye(len(positions)) * 1e3
    assert distances.min() > 0.5


@pytest.mark.parametrize("row, column", [(2, 5), (7, 0)])
def test_positional_entity_embeddings_carry_the_code_of_the_video_token_they_pass(row, column):
    """An entity standing at the centre of token (row, column) gets, for every temporal token, exactly the
    position code of the video token there, so attention can match the two by q . k."""
    model = tiny_model(entity_binding="positional")
    grid_t, grid = model.grid
    batch = inputs(batch=1)
    centre = torch.tensor([(column + 0.5) / grid, (row + 0.5) / grid])
    trajectories = centre.expand(1, 3, 8, 2).clone()
    entity_motion, presence = model.encode_trajectories(trajectories, batch["entity_mask"])
    embedding, code = model.trajectory_embeddings(trajectories, entity_motion, presence)
    assert embedding.shape == code.shape == (1, 3, grid_t, 32)
    expected = model.video_pos[0, [t * grid * grid + row * grid + column for t in range(grid_t)]]
    torch.testing.assert_close(code[0, 0], expected, rtol=0, atol=1e-5)


def test_gate_starts_at_zero_so_entities_do_not_change_video_tokens():
    model = tiny_model()
    gates = [block.gated_attn for block in model.blocks]
    assert all(isinstance(gate, GatedSelfAttention) and gate.alpha.item() == 0 for gate in gates)
    video, entities = torch.randn(2, 10, 32), torch.randn(2, 4, 32)
    mask = torch.ones(2, 4, dtype=torch.bool)
    torch.testing.assert_close(gates[0](video, entities, mask), video, rtol=0, atol=0)
    with torch.no_grad():
        gates[0].alpha.fill_(1.0)
    assert not torch.allclose(gates[0](video, entities, mask), video)


def test_at_initialisation_conditions_do_not_change_the_prediction_but_do_after_learning():
    model = tiny_model()
    batch = inputs()
    other = dict(batch, trajectories=torch.rand(2, 3, 8, 2), reference_images=torch.rand(2, 3, 3, 16, 16))
    with torch.no_grad():
        assert model(**batch).sample.abs().max() == 0  # zero-initialised head (adaLN-Zero)
        randomise_zero_layers(model)
        first, second = model(**batch).sample, model(**other).sample
    assert not torch.allclose(first, second, atol=1e-4)


def test_pixel_refiner_starts_as_the_identity_on_the_coarse_estimate_and_then_reads_the_noisy_input():
    torch.manual_seed(0)
    refiner = PixelRefiner(3, 8)
    sample, coarse, sigma = torch.randn(2, 4, 3, 16, 16), torch.randn(2, 4, 3, 16, 16), torch.tensor([0.2, 0.9])
    torch.testing.assert_close(refiner(sample, coarse, sigma), coarse, rtol=0, atol=0)
    with torch.no_grad():
        refiner.net[-1].weight.normal_(0, 0.2)
    assert not torch.allclose(refiner(sample, coarse, sigma), refiner(torch.zeros_like(sample), coarse, sigma), atol=1e-4)
    model = tiny_model(refiner_width=8)
    with torch.no_grad():
        assert model(**inputs()).sample.abs().max() == 0  # the refiner keeps the zero-initialised head's zero


def test_routed_entities_put_each_entity_token_where_that_entity_is():
    model = tiny_model(entity_routing=True)
    batch = inputs(batch=1)
    batch["trajectories"][0, 0] = torch.tensor([0.1, 0.1]).expand(8, 2)  # entity 0 top-left, entity 1 bottom-right
    batch["trajectories"][0, 1] = torch.tensor([0.9, 0.9]).expand(8, 2)
    _, presence = model.encode_trajectories(batch["trajectories"], batch["entity_mask"])
    grid_t, grid = model.grid
    entities = torch.zeros(1, 3, grid_t * 2, 32)  # S = grid_t temporal slots x A = 2 appearance tokens
    entities[0, 0, :, 0], entities[0, 1, :, 1] = 1.0, 1.0
    routed = model.routed_entities(entities, presence).unflatten(1, (grid_t, grid, grid))
    corner, far = routed[0, :, 0, 0], routed[0, :, -1, -1]
    torch.testing.assert_close(corner[:, :2], torch.tensor([[1.0, 0.0]]).expand(grid_t, 2), atol=1e-3, rtol=0)
    torch.testing.assert_close(far[:, :2], torch.tensor([[0.0, 1.0]]).expand(grid_t, 2), atol=1e-3, rtol=0)
    assert all(block.router.weight.abs().sum() == 0 for block in model.blocks)  # a new path starts at zero


def test_reference_canvas_pastes_each_reference_on_its_path_at_one_to_one_scale():
    generator = torch.Generator().manual_seed(0)
    references = torch.rand(1, 2, 3, 16, 16, generator=generator) * 2 - 1
    centres = [(8, 8), (9, 8), (13, 10), (20, 20)]  # pixels; integer centres paste the reference exactly
    trajectories = torch.zeros(1, 2, 4, 2)
    trajectories[0, 0] = torch.tensor(centres, dtype=torch.float32) / 32
    trajectories[0, 1] = torch.tensor([24.0, 24.0]) / 32
    weights = torch.tensor([[[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])  # frame 3 out of view; slot 1 empty
    canvas = reference_canvas(references, trajectories, weights, 32)
    assert canvas.shape == (1, 4, 4, 32, 32)
    for frame, (x, y) in enumerate(centres[:3]):
        footprint = torch.zeros(32, 32)
        footprint[y - 8 : y + 8, x - 8 : x + 8] = 1
        torch.testing.assert_close(canvas[0, frame, :3, y - 8 : y + 8, x - 8 : x + 8], references[0, 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(canvas[0, frame, 3], footprint, atol=1e-5, rtol=0)
        assert (canvas[0, frame, :3] * (1 - footprint)).abs().max() < 1e-6
    assert canvas[0, 3].abs().max() == 0


def sprite_reference(colour, radius=4.0):
    """A disc of ``colour`` on the sprites' grey background (0 in ``[-1, 1]``): ``(3, 16, 16)``."""
    ys, xs = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    disc = ((xs - 8) ** 2 + (ys - 8) ** 2 <= radius**2).float()
    return disc * torch.tensor(colour)[:, None, None], disc


@pytest.mark.parametrize("compositing", ["sum", "over"])
def test_reference_canvas_overlap_sums_or_shows_the_later_entity_in_front(compositing):
    """Two discs 3 pixels apart: ``sum`` adds their colours where they overlap; ``over`` shows the later slot's disc
    there and each disc alone elsewhere; outside both, the two agree (grey background = 0)."""
    back, back_mask = sprite_reference((0.8, -0.6, -0.6))
    front, front_mask = sprite_reference((-0.6, 0.8, -0.6))
    references = torch.stack([back, front])[None]
    trajectories = torch.tensor([[12.0, 12.0], [15.0, 12.0]])[None, :, None] / 32  # integer centres: exact paste
    canvas = reference_canvas(references, trajectories, torch.ones(1, 2, 1), 32, compositing)[0, 0]
    placed_back, placed_front = torch.zeros(3, 32, 32), torch.zeros(3, 32, 32)
    placed_back[:, 4:20, 4:20], placed_front[:, 4:20, 7:23] = back, front
    in_front = torch.zeros(32, 32)
    in_front[4:20, 7:23] = front_mask
    expected = placed_back + placed_front if compositing == "sum" else placed_front + (1 - in_front) * placed_back
    torch.testing.assert_close(canvas[:3], expected, atol=1e-5, rtol=0)
    overlap = (in_front > 0) & (placed_back.abs().amax(0) > 0)
    assert overlap.sum() > 20
    if compositing == "over":
        torch.testing.assert_close(canvas[:3, overlap], placed_front[:, overlap], atol=1e-5, rtol=0)
    footprint = torch.zeros(32, 32)
    footprint[4:20, 4:23] = 1
    torch.testing.assert_close(canvas[3], footprint, atol=1e-5, rtol=0)


def test_reference_alpha_marks_the_entity_not_its_plain_background():
    disc, mask = sprite_reference((0.8, -0.6, -0.6))
    white_stripe = torch.full((3, 16, 16), -0.2) * mask + (1 - mask) * 0.0  # 0.4 grey-ish shade vs 0.5 background
    alpha = reference_alpha(torch.stack([disc, white_stripe, disc + 0.3])[None])
    for index in range(3):
        torch.testing.assert_close(alpha[0, index, 0], mask, atol=0, rtol=0)
    with pytest.raises(ValueError, match="compositing"):
        reference_canvas(disc[None, None], torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1), 32, "max")
    with pytest.raises(ValueError, match="canvas_compositing"):
        tiny_model(reference_canvas=True, canvas_compositing="max")


@pytest.mark.parametrize("compositing", ["sum", "over"])
def test_reference_canvas_path_starts_at_zero_and_then_feeds_the_prediction(compositing):
    """With the canvas weights at their initial zeros the model equals the same model without the canvas."""
    plain = tiny_model(refiner_width=8, entity_routing=True)
    randomise_zero_layers(plain)
    model = tiny_model(refiner_width=8, entity_routing=True, reference_canvas=True, canvas_compositing=compositing)
    assert model.canvas_embed.weight.abs().sum() == 0 and model.refiner.net[0].weight[:, 7:].abs().sum() == 0
    state = model.state_dict()
    for name, value in plain.state_dict().items():
        if name == "refiner.net.0.weight":
            state[name][:, :7] = value
        else:
            state[name] = value
    model.load_state_dict(state)
    batch = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).sample, plain(**batch).sample, atol=1e-5, rtol=1e-5)
        model.canvas_embed.weight.normal_(0, 0.2)
        model.refiner.net[0].weight[:, 7:].normal_(0, 0.2)
        assert not torch.allclose(model(**batch).sample, plain(**batch).sample, atol=1e-3)
    assert tiny_model("tora1", reference_canvas=True).canvas_embed is None  # no references in tora1


@pytest.mark.parametrize("binding", ["positional", "pooled"])
def test_padding_entity_slots_are_ignored(binding):
    model = tiny_model(entity_binding=binding)
    randomise_zero_layers(model)
    batch = inputs()
    changed = dict(batch, trajectories=batch["trajectories"].clone(), reference_images=batch["reference_images"].clone())
    changed["trajectories"][0, 2] = 0.9  # slot 2 of video 0 is padding
    changed["reference_images"][0, 2] = 0.3
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).sample, model(**changed).sample)


@pytest.mark.parametrize("binding", ["positional", "pooled"])
@pytest.mark.parametrize("mode", ["tora2", "tora1", "no_gate", "dit"])
def test_modes_shapes_and_embeddings(mode, binding):
    model = tiny_model(mode, entity_binding=binding)
    randomise_zero_layers(model)
    with torch.no_grad():
        output = model(**inputs())
    assert output.sample.shape == (2, 8, 3, 32, 32)
    assert torch.isfinite(output.sample).all()
    if mode in ("tora1", "dit"):
        assert output.motion_embeddings is None and not hasattr(model, "personalization")
    else:
        assert output.motion_embeddings.shape == output.appearance_embeddings.shape == (2, 3, 64)
    assert all((block.gated_attn is not None) == (mode == "tora2") for block in model.blocks)
    assert all((block.fuser is None) == (mode == "dit") for block in model.blocks)


def test_modes_other_than_tora1_need_reference_images():
    batch = inputs()
    del batch["reference_images"]
    with pytest.raises(ValueError, match="needs reference_images"):
        tiny_model()(**batch)


def test_patchify_round_trip():
    model = tiny_model()
    video = torch.randn(2, 8, 3, 32, 32)
    torch.testing.assert_close(model.unpatchify(model.patchify(video)), video, rtol=0, atol=0)


def test_sdpa_and_math_backends_agree():
    model = tiny_model()
    randomise_zero_layers(model)
    batch = inputs()
    with torch.no_grad():
        reference = model(**batch).sample
        model.set_attention_backend("math")
        torch.testing.assert_close(model(**batch).sample, reference, atol=1e-4, rtol=1e-4)


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="mode must be one of"):
        Tora2Transformer(**TINY, mode="tora3")
    with pytest.raises(ValueError, match="divisible"):
        Tora2Transformer(**TINY, patch_size=5)
    with pytest.raises(ValueError, match="entity_binding must be one of"):
        Tora2Transformer(**TINY, entity_binding="global")
    with pytest.raises(ValueError, match="dim must be divisible by 16"):
        Tora2Transformer(**{**TINY, "dim": 40})
