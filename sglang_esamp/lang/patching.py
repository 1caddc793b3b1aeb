"""Install / uninstall the frontend patches: a reversible, idempotent list of attribute swaps on SGLang classes.

The patch points live next to their concept (``params.patches()``, ``forks.patches()``), each a tuple
``(owner, attribute, make_replacement)`` where ``make_replacement(original)`` returns the new value (``original`` is
``MISSING`` when the attribute did not exist). ``install()`` applies all of them once; ``uninstall()`` restores the
originals (used by tests; programs normally keep the patches for the life of the process).
"""
from __future__ import annotations

import threading
from typing import Any, List, Tuple

MISSING = object()
_lock = threading.Lock()
_applied: List[Tuple[Any, str, Any]] = []   # (owner, attribute, original or MISSING), in application order


def _all_patches():
    from . import forks, params, routing

    return [*params.patches(), *forks.patches(), *routing.patches()]


def installed() -> bool:
    return bool(_applied)


def install() -> None:
    """Apply every frontend patch (no-op when already applied)."""
    with _lock:
        if _applied:
            return
        for owner, name, make in _all_patches():
            original = vars(owner)[name] if name in vars(owner) else MISSING
            setattr(owner, name, make(original))
            _applied.append((owner, name, original))


def uninstall() -> None:
    """Restore SGLang's original attributes (no-op when not installed)."""
    with _lock:
        while _applied:
            owner, name, original = _applied.pop()
            if original is MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)

