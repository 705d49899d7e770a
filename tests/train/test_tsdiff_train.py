import numpy as np
import pandas as pd
import pytest

from selfgen import TSDiffPipeline
from selfgen.data.bundled import BUNDLED_SPECS, load_bundled
from selfgen.train.tsdiff import TSDiffConfig, generate, train, training_series


@pytest.fixture
def sine_csv(tmp_path):
    steps = np.arange(300)
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2020-01-01", periods=300, freq="D"),
        "a": 5 + np.sin(2 * np.pi * steps / 7),
        "b": 8 + 2 * np.sin(2 * np.pi * (steps + 3) / 7),
    })
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    return path


def tiny_config(tmp_path, **overrides) -> TSDiffConfig:
    values = dict(
        output_dir=str(tmp_path / "run"), context_length=14, prediction_length=7, lags_seq=[7], hidden_dim=16,
        num_residual_blocks=1, state_dim=8, step_embedding_dim=16, scaling="standard", num_train_timesteps=50,
        max_train_steps=200, train_batch_size=16, num_windows_per_epoch=512, lr_warmup_steps=0,
        logging_steps=40, checkpointing_steps=0, report_to=None,
    )
    values.update(overrides)
    return TSDiffConfig(**values)


def test_training_lowers_the_loss_and_exports_a_forecaster(tmp_path, sine_csv):
    result = train(tiny_config(tmp_path, data=str(sine_csv), holdout=7))
    losses = [record["loss"] for record in result.history]
    assert losses[-1] < 0.6 * losses[0], losses
    pipe = TSDiffPipeline.from_pretrained(result.pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.model.lags == [7] and pipe.scheduler.config.num_train_timesteps == 50
    out = pipe.forecast(np.arange(40.0), num_samples=2, num_inference_steps=5)
    assert out.samples.shape == (1, 2, 7)

    output = generate(str(result.pipeline_dir), tmp_path / "gen", csv=str(sine_csv), num_samples=3, holdout=7)
    samples = pd.read_csv(output["samples_csv"])
    assert len(samples) == 2 * 3 * 7 and set(samples["item_id"]) == {"a", "b"}
    assert samples["timestamp"].min() == "2020-10-20"  # the 7 held-out days, 2020-10-20 .. 2020-10-26
    assert all((tmp_path / "gen" / f"fan_{item}.png").is_file() for item in ("a", "b"))
    assert set(output["metrics"]) == {"crps", "normalized_crps", "wql", "mase", "nrmse"}
    with pytest.raises(ValueError, match=r"--holdout 8: the model at .* was trained on .*series.csv with holdout=7"):
        generate(str(result.pipeline_dir), tmp_path / "gen", csv=str(sine_csv), num_samples=3, holdout=8)


def test_holdout_removes_the_last_points_of_every_series_from_training(tmp_path, sine_csv):
    full = training_series(tiny_config(tmp_path, data=str(sine_csv)))
    held = training_series(tiny_config(tmp_path, data=str(sine_csv), holdout=7))
    assert [len(s) for s in full] == [300, 300] and [len(s) for s in held] == [293, 293]
    for whole, cut in zip(full, held):
        np.testing.assert_array_equal(cut.values, whole.values[:-7])
    with pytest.raises(ValueError, match="holdout must be an integer >= 0, got -1"):
        training_series(tiny_config(tmp_path, data=str(sine_csv), holdout=-1))


def test_freq_and_fill_na_fields_reach_the_loader(tmp_path):
    stamps = pd.date_range("2020-01-01", periods=40, freq="D").delete(17)  # one missing day
    path = tmp_path / "gap.csv"
    pd.DataFrame({"timestamp": stamps, "x": np.arange(40.0).take(np.r_[0:17, 18:40])}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="cannot infer the frequency of item 'x'"):
        training_series(tiny_config(tmp_path, data=str(path)))
    (series,) = training_series(tiny_config(tmp_path, data=str(path), freq="D"))
    np.testing.assert_allclose(series.values, np.arange(40.0))  # the gap interpolated
    with pytest.raises(ValueError, match="item 'x' has 1 missing value"):
        training_series(tiny_config(tmp_path, data=str(path), freq="D", fill_na="raise"))


@pytest.mark.parametrize("name,horizon,windows", [("co2", 26, 8), ("sunspots", 11, 5), ("elnino", 12, 6), ("realgdp", 8, 5)])
def test_bundled_split_holds_out_the_last_windows(name, horizon, windows):
    bundled = load_bundled(name)
    assert bundled.prediction_length == horizon and bundled.test_length == horizon * windows
    test = bundled.test_windows()
    assert len(test) == windows
    np.testing.assert_array_equal(np.concatenate([truth for _, truth in test]), bundled.values[-horizon * windows :])
    np.testing.assert_array_equal(test[0][0], bundled.train_values)
    assert len(bundled.train_values) == len(bundled.values) - horizon * windows


def test_training_sees_only_the_train_split(tmp_path):
    (series,) = training_series(tiny_config(tmp_path, dataset="realgdp"))
    bundled = load_bundled("realgdp")
    np.testing.assert_array_equal(series.values, bundled.train_values)
    with pytest.raises(ValueError, match="dataset must be one of"):
        training_series(tiny_config(tmp_path, dataset="nile"))
    assert set(BUNDLED_SPECS) == {"co2", "sunspots", "elnino", "realgdp"}
