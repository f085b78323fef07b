"""The training loop under two processes (DDP over gloo on the CPU): the code path of multi-GPU training."""
import os
import socket
import subprocess
import sys

import yaml

from conftest import REPO
from wsense.config import load_config

ROOT = REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_and_save_one_checkpoint(tiny_data, tmp_path):
    config = load_config().to_dict()
    config["data"].update(dir=str(tiny_data), russian_queries=None, russian_train_captions=None)
    config["safety"]["labels"] = str(ROOT / "labels" / "photos.csv")  # relative paths are the working directory's
    config["cache_dir"] = str(tmp_path / "cache")
    config["training"].update(output_dir=str(tmp_path / "run"), epochs=2, batch_size=4, contrastive_batch_size=2,
                              warmup_steps=1)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(free_port()), str(ROOT / "train.py"), "--config", str(tmp_path / "config.yaml"), "--cpu"]
    # WSENSE_DATA_DIR (set where the full data is) would override the tiny data set of the config.
    env = {**{k: v for k, v in os.environ.items() if k != "WSENSE_DATA_DIR"}, "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MULTI_CPU, 2 processes" in done.stderr
    assert done.stdout.count("best checkpoint:") == 1  # printed by the main process only
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "last" / "train_state.json").is_file()
