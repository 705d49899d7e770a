import torch

from selfgen.models.embeddings import (
    PluckerPatchEmbedding,
    patchify,
    pixel_rays,
    plucker_ray_map,
    relative_cameras,
    unpatchify,
)

K = torch.tensor([[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]])


def _camera(position, yaw: float = 0.0) -> torch.Tensor:
    cos, sin = torch.cos(torch.tensor(yaw)), torch.sin(torch.tensor(yaw))
    camera = torch.eye(4)
    camera[:3, :3] = torch.tensor([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])
    camera[:3, 3] = torch.tensor(position)
    return camera


def test_pixel_rays_follow_the_pinhole_model():
    camera = _camera([1.0, 2.0, 3.0], yaw=0.3)
    origins, directions = pixel_rays(camera, K, 16, 16)
    assert torch.allclose(origins[5, 7], camera[:3, 3])
    # the ray through pixel (u, v) = (7.5, 5.5) is R K^-1 (7.5, 5.5, 1), normalised
    expected = camera[:3, :3] @ torch.linalg.solve(K, torch.tensor([7.5, 5.5, 1.0]))
    assert torch.allclose(directions[5, 7], expected / expected.norm(), atol=1e-6)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(16, 16), atol=1e-6)


def test_plucker_moment_is_origin_cross_direction_and_vanishes_at_the_origin():
    rays = plucker_ray_map(torch.stack([_camera([0.0, 0.0, 0.0]), _camera([2.0, 0.0, 0.0])]), K, 16, 16)
    assert rays.shape == (2, 6, 16, 16)
    assert rays[0, 3:].abs().max() < 1e-7
    direction, moment = rays[1, :3, 4, 4], rays[1, 3:, 4, 4]
    assert torch.allclose(moment, torch.cross(torch.tensor([2.0, 0.0, 0.0]), direction, dim=0), atol=1e-6)


def test_relative_cameras_make_the_reference_the_identity_and_keep_relative_motion():
    reference, other = _camera([1.0, 0.5, -2.0], 0.7), _camera([0.0, 1.0, 4.0], -0.2)
    relative = relative_cameras(torch.stack([reference, other]), reference)
    assert torch.allclose(relative[0], torch.eye(4), atol=1e-6)
    shift = _camera([3.0, -1.0, 2.0], 1.1)  # moving the whole world leaves relative cameras unchanged
    assert torch.allclose(relative_cameras(shift @ other, shift @ reference), relative[1], atol=1e-5)


def test_patchify_round_trip_and_camera_tokens_depend_on_the_camera():
    images = torch.randn(2, 3, 3, 16, 16)
    tokens = patchify(images, 4)
    assert tokens.shape == (2, 3, 16, 48)
    assert torch.equal(tokens[0, 0, 1], images[0, 0, :, 0:4, 4:8].reshape(-1))
    assert torch.equal(unpatchify(tokens, 4, 3, 16, 16), images)
    embed = PluckerPatchEmbedding(patch_size=4, hidden_size=8)
    first, second = embed(torch.stack([_camera([0.0, 0.0, 0.0]), _camera([0.0, 0.0, 1.0], 0.5)]), K, 16, 16)
    assert first.shape == (16, 8) and not torch.allclose(first, second)
