import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from selfgen import AutoPipeline, PlenopticDreamerPipeline
from selfgen.data.multiview import MultiViewSceneDataset, look_at, render
from selfgen.models.plenoptic import PlenopticTransformer
from selfgen.pipelines.plenoptic import chunk_starts, frustum_overlap, select_conditions

SIZE = 16
K = np.array([[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def scene():
    return MultiViewSceneDataset(1, num_views=4, num_frames=3, size=SIZE, split="test")[0]


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    model = PlenopticTransformer(sample_size=SIZE, num_frames=3, patch_size=8, hidden_size=32, depth=1, num_heads=2)
    with torch.no_grad():
        model.proj_out.weight.normal_(std=0.1)
    pipeline = PlenopticDreamerPipeline(transformer=model, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _path(azimuth_degrees: float, frames: int = 3, radius: float = 5.0) -> np.ndarray:
    angle = np.deg2rad(azimuth_degrees)
    eye = np.array([radius * np.sin(angle), 1.5, radius * np.cos(angle)])
    return np.stack([look_at(eye, np.zeros(3))] * frames)


def _run(pipe, scene, targets, **options):
    videos, cameras = scene["videos"].numpy(), scene["cameras"].numpy()
    return pipe(
        source_video=videos[0], source_cameras=cameras[0], target_cameras=targets, intrinsics=scene["intrinsics"].numpy(),
        num_inference_steps=3, generator=torch.Generator().manual_seed(0), **options,
    )


def test_retrieval_picks_the_cameras_that_see_the_target_frustum():
    memory = [_path(0), _path(180), _path(95), _path(60), _path(-90)]
    target = _path(90)
    scores = frustum_overlap(target, memory, K, SIZE)
    assert scores[2] == scores.max() and scores[1] < scores[2] and scores[4] < scores[3]
    assert select_conditions(target, memory, 2, "fov", K, SIZE) == [2, 3]
    assert select_conditions(target, memory, 1, "fov", K, SIZE) == [2]
    assert select_conditions(_path(180), memory, 1, "fov", K, SIZE) == [1]
    assert select_conditions(target, memory, 2, "recent", K, SIZE) == [3, 4]
    assert select_conditions(target, memory, 2, "source", K, SIZE) == [0]
    # equal scores: the more recent video wins
    assert select_conditions(_path(0), [_path(0), _path(0)], 1, "fov", K, SIZE) == [1]
    with pytest.raises(ValueError, match="retrieval"):
        select_conditions(target, memory, 2, "nearest", K, SIZE)


def test_chunk_starts_cover_long_videos_with_overlap():
    assert chunk_starts(3, 4, 1) == [0]
    assert chunk_starts(4, 4, 1) == [0]
    assert chunk_starts(6, 4, 1) == [0, 2]
    assert chunk_starts(10, 4, 1) == [0, 3, 6]


def test_autoregressive_chain_of_three_views_with_retrieval(pipe, scene):
    cameras = scene["cameras"].numpy()
    out = _run(pipe, scene, [cameras[1], cameras[2], cameras[1]], retrieval_k=2)
    assert len(out.videos) == 3
    for video in out.videos:
        assert video.shape == (3, SIZE, SIZE, 3) and 0 <= video.min() and video.max() <= 1 and video.std() > 0
    assert out.conditions[0] == [0]  # only the source exists yet
    assert 1 in out.conditions[2]  # the revisit of view 1 retrieves the first generation of it
    recent = _run(pipe, scene, [cameras[1], cameras[2], cameras[3]], retrieval_k=1, retrieval="recent").conditions
    assert recent == [[0], [1], [2]]
    single = _run(pipe, scene, [cameras[1], cameras[2]], retrieval="source").conditions
    assert single == [[0], [0]]
    assert not np.allclose(out.videos[0], out.videos[1])  # different target cameras, different videos


def test_reload_is_exact_and_output_types(pipe, scene, tmp_path):
    cameras = scene["cameras"].numpy()
    expected = _run(pipe, scene, [cameras[1], cameras[2]]).videos
    pipe.save_pretrained(tmp_path)
    reloaded = AutoPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert isinstance(reloaded, PlenopticDreamerPipeline)
    for got, want in zip(_run(reloaded, scene, [cameras[1], cameras[2]]).videos, expected):
        torch.testing.assert_close(got, want)
    tensors = _run(pipe, scene, [cameras[1]], output_type="pt").videos
    assert tensors[0].shape == (3, 3, SIZE, SIZE)


def test_long_video_is_generated_in_chunks_that_keep_the_previous_frames(pipe):
    """5 frames with a 3-frame model and chunk_overlap=1: chunks [0, 3) and [2, 5). In every denoising call
    of the second chunk, its first frame is the first chunk's finished frame 2, held clean (timestep 0,
    never updated), and the conditions are the source's frames 2..4."""
    video = MultiViewSceneDataset(1, num_views=2, num_frames=5, size=SIZE)[0]
    cameras, source = video["cameras"].numpy(), video["videos"][0].numpy()
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda module, args: calls.append([argument.clone() if torch.is_tensor(argument) else argument for argument in args])
    )
    try:
        out = pipe(
            source_video=source, source_cameras=cameras[0], target_cameras=[cameras[1]], intrinsics=video["intrinsics"].numpy(),
            num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="pt",
        )
    finally:
        hook.remove()
    assert out.videos[0].shape == (5, 3, SIZE, SIZE) and len(calls) == 4  # 2 chunks x 2 steps
    kept = out.videos[0][2] * 2 - 1  # the output's frame 2 in the model's [-1, 1]
    for sample, timesteps, _, _, conditions, *_ in calls[:2]:  # first chunk: frames 0..2, all noisy
        assert (timesteps > 0).all() and conditions.shape[2] == 3
    for sample, timesteps, _, _, conditions, *_ in calls[2:]:
        torch.testing.assert_close(sample[0, 0], kept)  # the previous chunk's frame, unchanged by the sampler
        assert (timesteps[:, 0] == 0).all() and (timesteps[:, 1:] > 0).all()  # clean prefix, noisy rest
        torch.testing.assert_close(conditions[0, 0], torch.from_numpy(source[2:5]).permute(0, 3, 1, 2) * 2 - 1)
    first_chunk_end = calls[1][0][0, 2]  # what the first chunk's last step started from: not the final frame
    assert not torch.allclose(first_chunk_end, kept, atol=1e-3)


def test_known_views_join_the_memory_and_per_view_intrinsics_are_used(pipe, scene):
    videos, cameras = scene["videos"].numpy(), scene["cameras"].numpy()
    out = _run(pipe, scene, [cameras[2], cameras[1]], retrieval_k=2, known_videos=[videos[1]], known_cameras=[cameras[1]])
    assert out.conditions[0][0] == 0 and 1 in out.conditions[1]  # revisiting view 1 retrieves its recorded video
    recent = _run(pipe, scene, [cameras[2], cameras[3]], retrieval_k=2, retrieval="recent", known_videos=[videos[1]], known_cameras=[cameras[1]])
    assert recent.conditions == [[0, 1], [1, 2]]  # memory: source, known view, then the generations
    plain = _run(pipe, scene, [cameras[2]]).videos[0]
    zoomed = _run(pipe, scene, [cameras[2]], target_intrinsics=[K * np.array([[2.0], [2.0], [1.0]])]).videos[0]
    assert np.abs(plain - zoomed).mean() > 1e-4
    with pytest.raises(ValueError, match="known_cameras must hold one camera path per known video"):
        _run(pipe, scene, [cameras[2]], known_videos=[videos[1]])
    with pytest.raises(ValueError, match=r"target_intrinsics must hold one \(3, 3\) matrix per camera path"):
        _run(pipe, scene, [cameras[2]], target_intrinsics=[K, K])


def test_bad_inputs_are_clear_errors(pipe, scene):
    videos, cameras = scene["videos"].numpy(), scene["cameras"].numpy()
    K_scene = scene["intrinsics"].numpy()
    with pytest.raises(ValueError, match="source_cameras has 2 camera matrices but the video has 3 frames"):
        pipe(source_video=videos[0], source_cameras=cameras[0][:2], target_cameras=[cameras[1]], intrinsics=K_scene)
    with pytest.raises(ValueError, match=r"target_cameras\[0\] has 2 camera matrices"):
        pipe(source_video=videos[0], source_cameras=cameras[0], target_cameras=[cameras[1][:2]], intrinsics=K_scene)
    sheared = cameras[1].copy()
    sheared[1, :3, :3] *= 1.5
    with pytest.raises(ValueError, match=r"target_cameras\[0\]: camera matrix 1 is not rigid"):
        pipe(source_video=videos[0], source_cameras=cameras[0], target_cameras=[sheared], intrinsics=K_scene)
    with pytest.raises(ValueError, match="source_video must be"):
        pipe(source_video=videos[0][..., :2], source_cameras=cameras[0], target_cameras=[cameras[1]], intrinsics=K_scene)
    with pytest.raises(ValueError, match="intrinsics"):
        pipe(source_video=videos[0], source_cameras=cameras[0], target_cameras=[cameras[1]], intrinsics=np.eye(2))
    with pytest.raises(ValueError, match="retrieval_k"):
        pipe(source_video=videos[0], source_cameras=cameras[0], target_cameras=[cameras[1]], intrinsics=K_scene, retrieval_k=0)


def test_source_depth_feeds_the_warp_of_a_warp_conditioned_model(scene):
    torch.manual_seed(0)
    model = PlenopticTransformer(sample_size=SIZE, num_frames=3, patch_size=8, hidden_size=32, depth=1, num_heads=2, warp_conditioning=True)
    with torch.no_grad():
        model.proj_out.weight.normal_(std=0.1)
    warp_pipe = PlenopticDreamerPipeline(transformer=model, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000))
    warp_pipe.set_progress_bar_config(disable=True)
    cameras = scene["cameras"].numpy()
    depth = render(scene["scene"], cameras[0], K, SIZE, return_depth=True)[1]
    without = _run(warp_pipe, scene, [cameras[1]]).videos[0]
    np.testing.assert_allclose(_run(warp_pipe, scene, [cameras[1]], source_depth=depth).videos[0], without, atol=1e-6)  # zero-init
    with torch.no_grad():
        model.warp_embed.weight.normal_(std=0.2)
    assert np.abs(_run(warp_pipe, scene, [cameras[1]], source_depth=depth).videos[0] - without).mean() > 1e-3
    with pytest.raises(ValueError, match="source_depth must be"):
        _run(warp_pipe, scene, [cameras[1]], source_depth=depth[:, :4])
    with pytest.raises(ValueError, match="positive"):
        _run(warp_pipe, scene, [cameras[1]], source_depth=-depth)


def test_source_depth_is_refused_by_a_model_without_a_warp_input(pipe, scene):
    cameras = scene["cameras"].numpy()
    depth = render(scene["scene"], cameras[0], K, SIZE, return_depth=True)[1]
    with pytest.raises(ValueError, match="no warp input"):
        _run(pipe, scene, [cameras[1]], source_depth=depth)
