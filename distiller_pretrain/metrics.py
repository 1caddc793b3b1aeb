"""Metrics sink: always a JSONL file, plus Weights & Biases when it is not disabled. Rank 0 only.

W&B mode: ``WANDB_MODE`` if set (tests use ``disabled``); otherwise ``online`` with ``WANDB_API_KEY`` and
``offline`` without one (an offline run never touches the network and never prompts). wandb is imported only
when used. Its ``.wandb`` files cannot be read back from Python, so the JSONL file is the record to test against.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional


def wandb_mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class MetricsSink:
    def __init__(self, path, *, enabled: bool = True, wandb_project: Optional[str] = None,
                 run_name: Optional[str] = None, config: Optional[dict] = None):
        self.enabled = enabled
        self.path = Path(path)
        self._wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        mode = wandb_mode()
        if wandb_project and mode != "disabled":
            import wandb

            self._wandb = wandb.init(project=wandb_project, name=run_name, config=config or {}, mode=mode,
                                     dir=str(self.path.parent), reinit="finish_previous")

    def log(self, record: dict, step: Optional[int] = None):
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3), **({"step": step} if step is not None else {}), **record}
        self._f.write(json.dumps(row, sort_keys=True) + "\n")
        self._f.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)

    def summary(self, values: dict):
        if self.enabled and self._wandb is not None:
            for k, v in values.items():
                self._wandb.summary[k] = v

    def close(self):
        if not self.enabled:
            return
        self._f.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def read_jsonl(path) -> list:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
