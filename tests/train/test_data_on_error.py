"""``on_error`` reaches the image and video loaders from the config/CLI of the methods that read --data."""

import numpy as np
import pytest
from PIL import Image

from selfgen.train import ddae, ddpm
from selfgen.train.config import load_config, parse_overrides


def image_folder(root):
    for index in range(2):
        Image.fromarray(np.full((8, 8), 40 * index, np.uint8)).save(root / f"ok{index}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.mark.parametrize("module, config_class", [(ddpm, ddpm.DDPMConfig), (ddae, ddae.DDAEConfig)])
def test_on_error_skip_from_the_command_line_skips_and_counts(tmp_path, module, config_class):
    folder = image_folder(tmp_path)
    overrides = parse_overrides(["--data", str(folder), "--resolution", "8", "--in_channels", "1", "--on_error", "skip"])
    dataset = module.build_dataset(load_config(config_class, None, overrides))
    assert len(dataset) == 2 and dataset.num_skipped == 1
    with pytest.raises(ValueError, match="corrupt or unreadable image .*broken.png"):
        module.build_dataset(load_config(config_class, None, {"data": str(folder), "resolution": 8, "in_channels": 1}))
    with pytest.raises(ValueError, match=r"on_error must be one of \('raise', 'skip'\), got 'ignore'"):
        module.build_dataset(load_config(config_class, None, parse_overrides(
            ["--data", str(folder), "--resolution", "8", "--in_channels", "1", "--on_error", "ignore"])))
