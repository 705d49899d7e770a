import json

import numpy as np
import pytest

from selfgen.data.multiview import (
    CAMERA_PATHS,
    MultiViewSceneDataset,
    MultiViewVideoFolder,
    Scene,
    SceneObject,
    camera_path,
    check_cameras,
    default_intrinsics,
    load_camera_file,
    look_at,
    project_points,
    render,
    rotate_about_vertical,
    unseen_mask,
)


def _one_sphere_scene(center=(0.5, 0.5, -0.3), radius=0.5, velocity=(0.0, 0.0, 0.0)) -> Scene:
    sphere = SceneObject("sphere", np.array(center), radius, np.array([1.0, 0.0, 0.0]), np.array(velocity))
    return Scene([sphere], np.array([[0.2, 0.2, 0.2], [0.1, 0.1, 0.1]]), np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))


def test_items_follow_the_contract_and_are_deterministic():
    first = MultiViewSceneDataset(2, num_views=3, num_frames=2, size=16, seed=3)[1]
    again = MultiViewSceneDataset(2, num_views=3, num_frames=2, size=16, seed=3, cache=True)
    assert first["videos"].shape == (3, 2, 16, 16, 3) and first["cameras"].shape == (3, 2, 4, 4)
    assert first["intrinsics"].shape == (3, 3) and 0 <= first["videos"].min() and first["videos"].max() <= 1
    np.testing.assert_array_equal(again[1]["videos"].numpy(), first["videos"].numpy())
    np.testing.assert_allclose(again[1]["videos"].numpy(), first["videos"].numpy(), atol=1 / 255)  # from the uint8 cache
    held_out = MultiViewSceneDataset(2, num_views=3, num_frames=2, size=16, seed=3, split="test")[1]
    assert not np.allclose(held_out["videos"].numpy(), first["videos"].numpy())


def test_a_world_point_projects_where_the_renderer_draws_it():
    scene, intrinsics = _one_sphere_scene(), default_intrinsics(32)
    camera = look_at(np.array([0.5, 2.0, 4.0]), np.array([0.0, 0.3, 0.0]))
    video, depth = render(scene, camera[None], intrinsics, 32, return_depth=True)
    pixels, depths = project_points(np.array([[0.5, 0.5, -0.3], [0.0, 0.3, 0.0]]), camera, intrinsics)
    u, v = pixels[0].astype(int)
    assert video[0, v, u, 0] > 0.3 and video[0, v, u, 2] < 0.05  # the red sphere, not the blue sky or the grey floor
    assert depths[0] - 0.5 <= depth[0, v, u] <= depths[0]  # its front surface, at most a radius nearer
    np.testing.assert_allclose(pixels[1], [16.0, 16.0], atol=1e-6)  # the look-at point is the principal point
    assert (video[0, 0, :, 2] > 0.9).all()  # the top row is sky


def test_moving_objects_move_and_every_camera_path_kind_is_rigid():
    scene = _one_sphere_scene(velocity=(0.3, 0.0, 0.0))
    camera = look_at(np.array([0.0, 2.0, 5.0]), np.zeros(3))
    video = render(scene, np.stack([camera, camera]), default_intrinsics(32))
    assert not np.allclose(video[0], video[1])
    rng = np.random.default_rng(0)
    for kind in CAMERA_PATHS:
        path = camera_path(kind, 0.3, 5, rng)
        check_cameras(path, kind, 5)
        assert not np.allclose(path[0], path[-1]), kind


def test_neighbour_views_are_slightly_turned_copies_and_leave_other_views_alone():
    plain = MultiViewSceneDataset(3, num_views=4, num_frames=2, size=16)
    near = MultiViewSceneDataset(3, num_views=4, num_frames=2, size=16, neighbour_prob=1.0, neighbour_angle=0.15)
    for index in range(3):
        scene, plain_cameras = plain.scene_and_cameras(index)
        _, cameras = near.scene_and_cameras(index)
        np.testing.assert_array_equal(cameras[0], plain_cameras[0])  # the source never moves
        for view in range(1, 4):  # each view is an earlier view turned about the vertical by at most 0.15 rad
            found = False
            for anchor in range(view):
                (z0, x0), (z1, x1) = cameras[anchor, 0, [2, 0], 3], cameras[view, 0, [2, 0], 3]
                angle = np.arctan2(z0 * x1 - x0 * z1, z0 * z1 + x0 * x1)
                found |= abs(angle) <= 0.15 + 1e-9 and np.allclose(rotate_about_vertical(cameras[anchor], angle), cameras[view], atol=1e-6)
            assert found, (index, view)
    with pytest.raises(ValueError, match="neighbour_prob"):
        MultiViewSceneDataset(1, neighbour_prob=1.5)


def test_unseen_mask_is_empty_for_the_source_itself_and_grows_for_a_far_view():
    dataset = MultiViewSceneDataset(1, num_views=2, num_frames=2, size=16)
    scene, cameras = dataset.scene_and_cameras(0)
    _, source_depth = render(scene, cameras[0], dataset.intrinsics, 16, return_depth=True)
    assert not unseen_mask(source_depth, cameras[0], source_depth, cameras[0], dataset.intrinsics).any()
    opposite = np.stack([look_at(-camera[:3, 3] * np.array([1, -1, 1]), np.array([0.0, 0.4, 0.0])) for camera in cameras[0]])
    _, depth = render(scene, opposite, dataset.intrinsics, 16, return_depth=True)
    assert unseen_mask(depth, opposite, source_depth, cameras[0], dataset.intrinsics).mean() > 0.05


def test_camera_checks_name_the_problem(tmp_path):
    cameras = np.stack([np.eye(4)] * 3)
    with pytest.raises(ValueError, match="has 3 camera matrices but the video has 4 frames"):
        check_cameras(cameras, "cams", num_frames=4)
    scaled = cameras.copy()
    scaled[2, :3, :3] *= 2
    with pytest.raises(ValueError, match="camera matrix 2 is not rigid"):
        check_cameras(scaled, "cams")
    reflected = cameras.copy()
    reflected[0, 0, 0] = -1
    with pytest.raises(ValueError, match="not rigid"):
        check_cameras(reflected, "cams")
    with pytest.raises(ValueError, match=r"\(num_frames, 4, 4\)"):
        check_cameras(np.eye(4), "cams")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_camera_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"cameras": cameras.tolist()}))
    with pytest.raises(ValueError, match="'cameras' and 'intrinsics'"):
        load_camera_file(tmp_path / "bad.json")


def _write_view(folder, name, frames, num_cameras):
    from selfgen.train.plenoptic import write_video

    folder.mkdir(parents=True, exist_ok=True)
    write_video(frames, folder / f"{name}.mp4", fps=4)
    cameras = np.stack([look_at(np.array([0.0, 1.0, 4.0 + f]), np.zeros(3)) for f in range(num_cameras)])
    record = {"cameras": cameras.tolist(), "intrinsics": default_intrinsics(frames.shape[1]).tolist()}
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_user_multi_camera_folder_is_validated_up_front(tmp_path):
    frames = np.random.default_rng(0).random((4, 32, 32, 3))
    _write_view(tmp_path / "ok" / "scene", "a", frames, 4)
    _write_view(tmp_path / "ok" / "scene", "b", frames, 4)
    item = MultiViewVideoFolder(tmp_path / "ok", num_views=2, num_frames=3, size=16)[0]
    assert item["videos"].shape == (2, 3, 16, 16, 3) and item["cameras"].shape == (2, 3, 4, 4)
    np.testing.assert_allclose(item["intrinsics"].numpy()[0, 0], 16.0)  # focal length follows the resize
    _write_view(tmp_path / "short" / "scene", "a", frames, 3)
    with pytest.raises(ValueError, match="a.json: cameras has 3 camera matrices but the video has 4 frames"):
        MultiViewVideoFolder(tmp_path / "short", num_views=1, num_frames=3, size=16)
    _write_view(tmp_path / "nojson" / "scene", "a", frames, 4)
    (tmp_path / "nojson" / "scene" / "a.json").unlink()
    with pytest.raises(FileNotFoundError, match="a.json not found"):
        MultiViewVideoFolder(tmp_path / "nojson", num_views=1, num_frames=3, size=16)
