"""DeepSpeed process setup and teardown on CPU-only machines (see shared/DEEPSPEED_ON_CPU.md).

* ``DS_ACCELERATOR=cpu`` must be set before deepspeed is imported, or it guesses (and logs a warning).
* Without a launcher, all five rendezvous variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) must
  exist, or ``deepspeed.initialize`` falls into MPI discovery and dies on a missing mpi4py.
* The shm comm op is a C++ JIT build (30-60 s cold) done at the first initialize; gloo alone is enough here.
* Teardown (engine.destroy, barrier, destroy_process_group) is for process exit only: DeepSpeed caches groups, so
  destroying the group and initializing again in the same process fails.
"""
from __future__ import annotations

import os
import socket

RENDEZVOUS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def configure_accelerator():
    """Choose the DeepSpeed accelerator before the first ``import deepspeed``."""
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
    return os.environ["DS_ACCELERATOR"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_rendezvous_env(local_rank: int = -1):
    """Plain ``python`` = one process: fill the missing rendezvous variables. Launchers set them already."""
    if "WORLD_SIZE" not in os.environ:
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": os.environ.get("MASTER_PORT") or str(free_port())})
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(local_rank if local_rank >= 0 else os.environ.get("RANK", "0"))
    missing = [k for k in RENDEZVOUS if k not in os.environ]
    if missing:
        raise RuntimeError(f"distributed launch without {missing}; use plain python, deepspeed or torchrun")


def disable_shm_comm():
    """Pure gloo: skip the shm comm op's C++ build (private DeepSpeed switch, probed lazily by design)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def init_distributed():
    """Environment + process group; idempotent within a process (pytest runs several trainings)."""
    configure_accelerator()
    ensure_rendezvous_env()
    if os.environ["DS_ACCELERATOR"] == "cpu":
        disable_shm_comm()
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=None, auto_mpi_discovery=False)
    return dist.get_rank(), dist.get_world_size()


def teardown(engine=None):
    """Only at process exit (see module docstring)."""
    import torch.distributed as dist

    if engine is not None:
        engine.destroy()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
