import json

import numpy as np
import pytest

from selfgen.data.multiview import (
    CAMERA_PATHS,
    MultiViewSceneDataset,
    MultiViewVideoFolder,
    Scene,
    SceneObject,
    WalkAwayScenes,
    camera_path,
    check_cameras,
    default_intrinsics,
    load_camera_file,
    look_at,
    project_points,
    render,
    render_background,
    rotate_about_vertical,
    unseen_mask,
    warp_video,
)
from selfgen.eval.multiview import masked_psnr


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


def test_background_render_drops_the_objects_and_masks_exactly_their_pixels():
    scene, intrinsics = _one_sphere_scene(), default_intrinsics(32)
    cameras = np.stack([look_at(np.array([0.5, 2.0, 4.0]), np.array([0.0, 0.3, 0.0]))] * 2)
    video = render(scene, cameras, intrinsics, 32)
    background, mask = render_background(scene, cameras, intrinsics, 32)
    assert mask.shape == (2, 32, 32) and 0 < mask.mean() < 0.5  # the sphere covers part of the frame
    red = (video[..., 0] > 0.3) & (video[..., 2] < 0.05)  # the sphere is red; sky is blue, floor grey
    np.testing.assert_array_equal(mask, red)
    np.testing.assert_allclose(background[~mask], video[~mask], atol=1e-6)  # floor and sky unchanged
    assert (np.abs(background[mask] - video[mask]).max(-1) > 0.1).all()  # object pixels show the floor/sky behind
    empty = Scene([], scene.floor_colors, scene.sky_colors)
    assert not render_background(empty, cameras, intrinsics, 32)[1].any()


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


def _write_view(folder, name, frames, num_cameras, azimuth=0.0, scale=1.0, opengl=False, focal=None):
    from selfgen.train.plenoptic import write_video

    folder.mkdir(parents=True, exist_ok=True)
    write_video(frames, folder / f"{name}.mp4", fps=4)
    eyes = [scale * np.array([4.0 * np.sin(azimuth + 0.05 * f), 1.0, 4.0 * np.cos(azimuth + 0.05 * f)]) for f in range(num_cameras)]
    cameras = np.stack([look_at(eye, np.zeros(3)) for eye in eyes])
    if opengl:
        cameras = cameras @ np.diag([1.0, -1.0, -1.0, 1.0])
    intrinsics = default_intrinsics(frames.shape[1])
    if focal is not None:
        intrinsics[0, 0] = intrinsics[1, 1] = focal
    record = {"cameras": cameras.tolist(), "intrinsics": intrinsics.tolist()}
    (folder / f"{name}.json").write_text(json.dumps(record))
    return cameras


def _scene_folder(root, num_views=4, num_frames=7, **options):
    frames = np.random.default_rng(0).random((num_frames, 32, 32, 3))
    return [_write_view(root / "scene", f"view{index}", frames, num_frames, azimuth=0.6 * index, **options) for index in range(num_views)]


def test_user_folder_uses_every_view_and_every_frame_in_chunks(tmp_path):
    _scene_folder(tmp_path, num_views=4, num_frames=7)
    dataset = MultiViewVideoFolder(tmp_path, num_frames=3, size=16)  # no num_views needed: the scenes have 4
    assert dataset.num_views == 4 and len(dataset) == 3  # frames 0-2, 3-5 and the last chunk 4-6
    last = dataset[2]
    assert last["videos"].shape == (4, 3, 16, 16, 3) and last["cameras"].shape == (4, 3, 4, 4)
    np.testing.assert_allclose(last["cameras"].numpy(), dataset.scenes[0]["cameras"][:, 4:7], atol=1e-6)
    assert MultiViewVideoFolder(tmp_path, num_views=2, num_frames=3, size=16)[0]["videos"].shape[0] == 2


def test_user_folder_per_view_intrinsics_and_pose_scale(tmp_path):
    frames = np.random.default_rng(0).random((4, 32, 32, 3))
    small = [_write_view(tmp_path / "mm" / "scene", name, frames, 4, azimuth=a, scale=1000.0, focal=f)
             for name, a, f in (("a", 0.0, 32.0), ("b", 0.8, 64.0))]
    dataset = MultiViewVideoFolder(tmp_path / "mm", num_frames=4, size=16)  # recorded in millimetres
    item = dataset[0]
    assert item["intrinsics"].shape == (2, 3, 3)
    np.testing.assert_allclose(item["intrinsics"].numpy()[:, 0, 0], [16.0, 32.0])  # each view's focal, resized
    centres = item["cameras"].numpy()[..., :3, 3].reshape(-1, 3)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1).mean(), 4.8, rtol=1e-3)  # 4123 mm -> 4.8 units
    np.testing.assert_allclose(item["cameras"].numpy()[..., :3, :3], np.stack(small)[..., :3, :3], atol=1e-6)  # rotations kept
    raw = MultiViewVideoFolder(tmp_path / "mm", num_frames=4, size=16, camera_distance=None)[0]["cameras"].numpy()
    np.testing.assert_allclose(raw[..., :3, 3], np.stack(small)[..., :3, 3], rtol=1e-5)


def test_user_folder_camera_conventions(tmp_path):
    opencv = _scene_folder(tmp_path / "cv", num_views=2, num_frames=3)
    _scene_folder(tmp_path / "gl", num_views=2, num_frames=3, opengl=True)
    with pytest.raises(ValueError, match="scene folder .*scene.*point away.*camera_convention: opengl"):
        MultiViewVideoFolder(tmp_path / "gl", num_frames=3, size=16)  # OpenGL poses read as OpenCV: caught
    converted = MultiViewVideoFolder(tmp_path / "gl", num_frames=3, size=16, camera_convention="opengl", camera_distance=None)[0]
    np.testing.assert_allclose(converted["cameras"].numpy(), np.stack(opencv), atol=1e-6)
    with pytest.raises(ValueError, match="camera_convention"):
        MultiViewVideoFolder(tmp_path / "cv", num_frames=3, size=16, camera_convention="blender")


def test_user_folder_errors_name_the_file_and_field(tmp_path):
    frames = np.random.default_rng(0).random((4, 32, 32, 3))
    _write_view(tmp_path / "short" / "scene", "a", frames, 3)
    _write_view(tmp_path / "short" / "scene", "b", frames, 4)
    with pytest.raises(ValueError, match="a.json: field 'cameras' has 3 camera matrices but the video has 4 frames"):
        MultiViewVideoFolder(tmp_path / "short", num_frames=3, size=16)
    _write_view(tmp_path / "nojson" / "scene", "a", frames, 4)
    _write_view(tmp_path / "nojson" / "scene", "b", frames, 4)
    (tmp_path / "nojson" / "scene" / "a.json").unlink()
    with pytest.raises(FileNotFoundError, match="a.json not found"):
        MultiViewVideoFolder(tmp_path / "nojson", num_frames=3, size=16)
    _write_view(tmp_path / "alone" / "scene", "a", frames, 4)
    with pytest.raises(ValueError, match="scene folder .*scene has 1 video"):
        MultiViewVideoFolder(tmp_path / "alone", num_frames=3, size=16)
    _scene_folder(tmp_path / "few", num_views=2, num_frames=3)
    with pytest.raises(ValueError, match="3 synchronised frames, num_frames=4"):
        MultiViewVideoFolder(tmp_path / "few", num_frames=4, size=16)
    bad = tmp_path / "badk" / "scene"
    _scene_folder(tmp_path / "badk", num_views=2, num_frames=3)
    record = json.loads((bad / "view1.json").read_text())
    record["intrinsics"] = [[32.0, 0.0], [0.0, 32.0]]
    (bad / "view1.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="view1.json: field 'intrinsics' must be a finite 3x3 matrix"):
        MultiViewVideoFolder(tmp_path / "badk", num_frames=3, size=16)


def test_static_scenes_and_walk_away_views():
    frozen = MultiViewSceneDataset(2, num_views=2, num_frames=3, size=16, split="test", static=True)
    moving = MultiViewSceneDataset(2, num_views=2, num_frames=3, size=16, split="test")
    scene, cameras = frozen.scene_and_cameras(1)
    twin, twin_cameras = moving.scene_and_cameras(1)
    np.testing.assert_array_equal(cameras, twin_cameras)  # same stream: same cameras, same objects at frame 0
    assert all((obj.velocity == 0).all() for obj in scene.objects)
    np.testing.assert_array_equal([obj.center for obj in scene.objects], [obj.center for obj in twin.objects])
    walk = WalkAwayScenes(1, num_views=4, num_frames=2, size=16, step_degrees=30.0)[0]
    paths = walk["cameras"].numpy()
    first, _ = frozen.scene_and_cameras(0)
    for view in range(4):  # view k is the source path turned k x 30 degrees about the vertical
        np.testing.assert_allclose(paths[view], rotate_about_vertical(paths[0], np.deg2rad(30.0 * view)), atol=1e-5)
    np.testing.assert_allclose(walk["videos"].numpy()[2], render(first, paths[2], default_intrinsics(16), 16), atol=1e-6)


def test_warp_moves_the_source_where_the_target_sees_it():
    """Warping a render by its depth into the same cameras returns it; into a turned camera the warped pixels
    match that camera's own render far better than the unwarped source does (nearest-pixel splatting
    aliases sharp edges, hence no exact match), and pixels outside the source's view stay empty."""
    dataset = MultiViewSceneDataset(2, num_views=1, num_frames=2, size=32, seed=1)
    for index in range(2):
        scene, cameras = dataset.scene_and_cameras(index)
        video, depth = render(scene, cameras[0], dataset.intrinsics, 32, return_depth=True)
        same, everywhere = warp_video(video, depth, cameras[0], cameras[0], dataset.intrinsics)
        assert everywhere.all()
        np.testing.assert_allclose(same, video)
        turned = rotate_about_vertical(cameras[0], 0.2)
        truth = render(scene, turned, dataset.intrinsics, 32)
        warped, valid = warp_video(video, depth, cameras[0], turned, dataset.intrinsics)
        assert 0.7 < valid.mean() < 0.95
        assert (warped[~valid] == 0).all()
        assert masked_psnr(warped, truth, valid) > masked_psnr(video, truth, valid) + 3
    item = MultiViewSceneDataset(1, num_views=2, num_frames=2, size=16, return_depth=True)[0]
    assert item["depths"].shape == (2, 2, 16, 16) and np.isinf(item["depths"].numpy()).any()  # sky
