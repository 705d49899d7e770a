"""The same training code under a 2-process accelerate launch on CPU (gloo).

accelerate 1.x's ``accelerate launch --cpu --num_processes N`` goes through mpirun; without MPI the
torch.distributed launcher is reached with ``--multi_gpu`` plus ``ACCELERATE_USE_CPU=true``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_two_process_accelerate_launch_trains_and_checkpoints(tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "selfgen.cli", "train", "ddpm", "--resolution", "8", "--block_out_channels", "[8, 16]",
        "--norm_num_groups", "4", "--train_batch_size", "8", "--max_train_steps", "4", "--checkpointing_steps", "2",
        "--logging_steps", "1", "--report_to", "null", "--output_dir", str(tmp_path / "run"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.count("trained ddpm for 4 steps") == 1  # printed by the main process only
    checkpoint = tmp_path / "run" / "checkpoints" / "step-4"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["config"]["max_train_steps"] == 4
    assert {"random_states_0.pkl", "random_states_1.pkl", "manifest.json"} <= {path.name for path in checkpoint.iterdir()}
    assert (tmp_path / "run" / "pipeline" / "model_index.json").is_file()
    records = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3, 4]
