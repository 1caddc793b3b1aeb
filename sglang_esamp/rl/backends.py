"""Where rollout requests go, and how a trainer's weights get there: an ESamp server (URL) or an in-process
``sglang_esamp.Engine``. Both replace the served weights through SGLang's own routes, so ESamp's hooks after a
weight change run exactly as docs/rl.md says (the LM head is read again, a warm start made for other weights is
dropped, ``weight_updates`` counts the change).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import requests


class ServerBackend:
    """An ESamp server at ``url`` (``python -m sglang_esamp.launch_server``, or any SGLang with the plugin).

    Weights go through ``POST /update_weights_from_disk``: the model is saved (safetensors) into ``weights_dir``
    and the server loads it from there, so the directory must be one the server can read (the same machine or a
    shared file system). Without ``weights_dir`` a temporary directory is used and removed by ``close``.
    """

    def __init__(self, url: str, weights_dir: Optional[str] = None, timeout_s: float = 3600.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._tmp = None if weights_dir else tempfile.TemporaryDirectory(prefix="esamp-weights-")
        self.weights_dir = Path(weights_dir or self._tmp.name)
        self.session = requests.Session()

    def generate(self, input_ids: List[List[int]], sampling_params: List[Dict[str, Any]]) -> List[dict]:
        body = {"input_ids": input_ids, "sampling_params": sampling_params, "return_logprob": True}
        r = self.session.post(self.url + "/generate", json=body, timeout=self.timeout_s)
        if r.status_code != 200:
            raise RuntimeError(f"/generate answered {r.status_code}: {r.text[:2000]}")
        out = r.json()
        return out if isinstance(out, list) else [out]

    def load_weights(self, model) -> None:
        model.save_pretrained(self.weights_dir, safe_serialization=True)
        self.load_checkpoint(str(self.weights_dir))

    def load_checkpoint(self, path: str) -> None:
        """Serve the weights of the HF checkpoint at ``path`` (e.g. the initial model, to start a run over)."""
        r = self.session.post(self.url + "/update_weights_from_disk", json={"model_path": path},
                              timeout=self.timeout_s)
        ok = r.status_code == 200 and r.json().get("success", False)
        if not ok:
            raise RuntimeError(f"/update_weights_from_disk failed ({r.status_code}): {r.text[:2000]}")

    def stats(self) -> dict:
        r = self.session.get(self.url + "/esamp/stats", timeout=60)
        r.raise_for_status()
        return r.json()

    def close(self) -> None:
        self.session.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class EngineBackend:
    """An in-process ``sglang_esamp.Engine``; weights go through ``Engine.update_weights_from_tensor``."""

    def __init__(self, engine):
        self.engine = engine

    def generate(self, input_ids: List[List[int]], sampling_params: List[Dict[str, Any]]) -> List[dict]:
        out = self.engine.generate(input_ids=input_ids, sampling_params=sampling_params, return_logprob=True)
        return out if isinstance(out, list) else [out]

    def load_weights(self, model) -> None:
        named = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
        self.engine.begin_weight_update()          # SGLang 0.5.23: tensor updates run inside a session
        try:
            ok, message = self.engine.update_weights_from_tensor(named)[:2]
        finally:
            self.engine.end_weight_update()
        if not ok:
            raise RuntimeError(f"update_weights_from_tensor failed: {message}")

    def stats(self) -> dict:
        """The shape of the server's ``GET /esamp/stats``: per-rank snapshots and their combined counters."""
        from ..wire.stats import merge_counters

        ranks = [s.get("esamp") for s in self.engine.get_server_info()["internal_states"]]
        return {"ranks": ranks, "total": merge_counters(ranks)}

    def close(self) -> None:
        pass


def backend_for(target: Any, weights_dir: Optional[str] = None):
    """A URL string -> ``ServerBackend``; an object with ``generate`` and ``update_weights_from_tensor`` (an
    Engine) -> ``EngineBackend``; a backend is returned as it is."""
    if isinstance(target, (ServerBackend, EngineBackend)):
        return target
    if isinstance(target, str):
        return ServerBackend(target, weights_dir=weights_dir)
    if hasattr(target, "generate") and hasattr(target, "update_weights_from_tensor"):
        return EngineBackend(target)
    raise TypeError(f"not an ESamp server URL or Engine: {target!r}")

