"""One shot: record -> train -> export from one pretraining YAML.

    python -m distiller_pretrain.pipeline --config configs/pretrain/smollm2.yaml [--nproc 2] [--max-rows N] [--steps N]

Each stage reads its own section of the YAML (see ``cli_config``); a rerun resumes the recording and, with
--resume-train, the training. With --nproc > 1 training runs under the deepspeed launcher in child processes.
"""
from __future__ import annotations

import argparse
import subprocess
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m distiller_pretrain.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="pretraining YAML (configs/pretrain/*.yaml)")
    p.add_argument("--run-dir", help="override run_dir")
    p.add_argument("--nproc", type=int, default=1, help="training processes (deepspeed launcher when > 1)")
    p.add_argument("--max-rows", type=int, help="override record.max_rows")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--resume-train", action="store_true", help="continue training from its last checkpoint")
    a = p.parse_args(argv)
    if a.nproc < 1:
        p.error("--nproc must be >= 1")

    from . import export, record, train
    from .ds_env import free_port

    common = ["--config", a.config] + (["--run-dir", a.run_dir] if a.run_dir else [])
    record.main(common + (["--max-rows", str(a.max_rows)] if a.max_rows else []))
    train_args = common + (["--steps", str(a.steps)] if a.steps else []) + (["--resume"] if a.resume_train else [])
    if a.nproc == 1:
        train.main(train_args)
    else:
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(a.nproc), "--master_port",
               str(free_port()), "--module", "distiller_pretrain.train", *train_args]
        subprocess.run(cmd, check=True)
    export.main(common)


if __name__ == "__main__":
    main()
