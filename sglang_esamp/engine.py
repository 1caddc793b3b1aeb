"""``sglang_esamp.Engine``: SGLang's offline ``sgl.Engine`` with ESamp configured and the CPU defaults applied.

``Engine(model_path="smollm2-135m-instruct", esamp={"bank_slots": 8}, **sgl_engine_kwargs)`` (``bank_slots``
left out is ``"auto"``: sized in the scheduler once the model loads, docs/scale.md); requests use the
same ``sampling_params`` as the HTTP server (``{"esamp": {"beta": 0.25}}`` or ``{"esamp": True}``). A hook that
SGLang failed to apply, or a mode ESamp cannot serve (``wire.modes``), is refused before or while the scheduler
starts. The stock ``sgl.Engine`` also gets ESamp through the plugin, with the default configuration (or
``SGLANG_ESAMP_CONFIG``).
The engine is SGLang's own class with two changes to ``shutdown``. It runs once: SGLang also registers it with
``atexit``, and a second run at interpreter exit logs into streams that are already closed (pytest's capture),
printing "--- Logging error ---" tracebacks after the caller's last line. And it spares the caller's
multiprocessing resource tracker: SGLang ends every child process of the caller, and the tracker is one; a
semaphore made before (tqdm's default lock, joblib's loky) then made Python print a ``resource_tracker`` warning
and a ``KeyError`` traceback at exit. SGLang's ``kill_process_tree`` has a ``skip_pid``; the tracker's pid goes there.
"""
from __future__ import annotations

import contextlib
import functools
from multiprocessing import resource_tracker
from typing import Mapping, Optional, Union

from .algo.config import ESampConfig
from .models import DEFAULT_MODEL, MODELS, resolve_model
from .serve.cpu_defaults import engine_cpu_defaults
from .wire.handoff import export_config


def Engine(model_path: Optional[str] = None, esamp: Union[None, Mapping, ESampConfig] = None, **kwargs):
    from sglang.srt.plugins import load_plugins

    from .hooks import check_hooks_applied

    load_plugins()            # idempotent; sgl.Engine calls it too -- here first, to refuse before starting
    check_hooks_applied()
    config = esamp if isinstance(esamp, ESampConfig) else ESampConfig.from_dict(dict(esamp or {}))
    export_config(config)
    model_path = model_path or DEFAULT_MODEL
    if model_path in MODELS:
        model_path = resolve_model(model_path)
    return _engine_class()(model_path=model_path, **engine_cpu_defaults(kwargs))


_ENGINE_CLASS = None


def _engine_class():
    global _ENGINE_CLASS
    if _ENGINE_CLASS is None:
        from sglang.srt.entrypoints.engine import Engine as SGLangEngine   # sgl.Engine may be a lazy proxy

        class ESampEngine(SGLangEngine):
            def shutdown(self):
                if getattr(self, "_esamp_shut_down", False):
                    return
                self._esamp_shut_down = True
                with _sparing_resource_tracker():
                    super().shutdown()
        _ENGINE_CLASS = ESampEngine
    return _ENGINE_CLASS


@contextlib.contextmanager
def _sparing_resource_tracker():
    """SGLang's shutdown calls its engine module's ``kill_process_tree`` on every child of this process; for that
    call, skip the resource tracker (shutdown runs on the caller's thread, once)."""
    import sglang.srt.entrypoints.engine as engine_module

    tracker_pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    original = engine_module.kill_process_tree
    if tracker_pid is not None:
        engine_module.kill_process_tree = functools.partial(original, skip_pid=tracker_pid)
    try:
        yield
    finally:
        engine_module.kill_process_tree = original
