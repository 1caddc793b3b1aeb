"""The one-shot pipeline from a YAML, with training under the deepspeed launcher on 2 processes (subprocess)."""
import json
import subprocess
import sys

import yaml

from pretrain_testutil import CORPUS, REPO, python_env


def test_pipeline_with_two_ranks_zero2(tiny_model, tmp_path):
    from sglang_esamp.algo.distiller.distiller import DistillerShape
    from sglang_esamp.algo.distiller.warm_start import load_for_server

    run = tmp_path / "run"
    cfg = {"model": tiny_model, "taps": "paper", "preset": "paper", "run_dir": str(run),
           "record": {"corpus": str(CORPUS), "max_rows": 1500, "shard_rows": 600},
           "train": {"zero_stage": 2, "steps": 20, "batch_size": 64, "lr": 3e-3, "val_fraction": 0.2,
                     "eval_every": 10, "log_every": 5, "no_progress": True},
           "export": {}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    env = python_env()
    env["WANDB_MODE"] = "offline"  # the W&B sink's no-key path: an offline run dir, no network, no prompt
    proc = subprocess.run([sys.executable, "-m", "distiller_pretrain.pipeline", "--config", str(tmp_path / "tiny.yaml"),
                           "--nproc", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Process" in proc.stdout + proc.stderr and "exits successfully" in proc.stdout + proc.stderr

    s = json.loads((run / "train" / "summary.json").read_text())
    assert s["world_size"] == 2 and s["global_batch"] == 128 and s["zero_stage"] == 2
    assert s["val_loss"] < s["baselines"]["identity"]
    rows = [json.loads(ln) for ln in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val/loss" in r] == [10, 20]
    assert list((run / "train" / "wandb").glob("offline-run-*"))
    path = run / "export" / "tiny-qwen2.paper.paper.safetensors"
    state = load_for_server(path, model_dir=tiny_model, shape=DistillerShape(hidden=128), taps="paper")
    assert set(state) == set(DistillerShape(hidden=128).param_shapes())
