"""ESamp in SGLang frontend programs: ``import sglang_esamp.lang`` once, then ``sgl.gen(..., esamp=...)``.

    import sglang as sgl
    import sglang_esamp.lang                    # installs the patches below (idempotent)

    @sgl.function
    def poem(s, topic):
        s += "Write a poem about " + topic + ".\\n"
        forks = s.fork(4)
        for f in forks:
            f += sgl.gen("poem", max_tokens=64, temperature=1.0, esamp=True)   # or esamp={"beta": 0.3}
        return [f.get_meta_info("poem")["esamp"] for f in forks]

    sgl.set_default_backend(sgl.RuntimeEndpoint("http://127.0.0.1:30000"))   # python -m sglang_esamp.launch_server
    # or: sgl.set_default_backend(sglang_esamp.lang.EngineBackend(sglang_esamp.Engine(...)))

Design. The frontend runs in the client process, where SGLang plugins are not loaded, so this package patches
the frontend classes on import (the server side needs nothing new: it already accepts ``sampling_params.esamp``):
  params.py          ``esamp`` as a sampling parameter: sgl.gen -> SglSamplingParams -> to_srt_kwargs,
                     validated in the client (``ESampParamError`` at ``sgl.gen``)
  forks.py           the branches of ``s.fork(n)`` share one distiller group (a per-fork-point key, size n)
  routing.py         the gateway's routing key (``x-smg-routing-key``) on gens of a group or a session
  engine_backend.py  ``EngineBackend``: a frontend backend for an in-process Engine (SGLang 0.5.23 has none)
  patching.py        the reversible patch list (``install()`` / ``uninstall()``)
Every patch wraps the original and changes nothing for gens without ``esamp``. Import this before
``from sglang import gen`` binds the unpatched name, or use ``sglang_esamp.lang.gen``. See docs/frontend.md.
"""
from __future__ import annotations

from .patching import install, installed, uninstall

install()

import sglang.lang.api as _api  # noqa: E402

from .engine_backend import EngineBackend  # noqa: E402


def gen(*args, **kwargs):
    """``sgl.gen`` with ``esamp=`` (the patched function, whatever name the caller imported)."""
    return _api.gen(*args, **kwargs)


__all__ = ["EngineBackend", "gen", "install", "installed", "uninstall"]
