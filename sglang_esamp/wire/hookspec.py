"""How a hook body declares the SGLang function it hooks, next to its code (no SGLang import here).

    @hook("sglang.srt.model_executor.model_runner.ModelRunner.sample", AROUND, ("self", "logits_output", ...),
          "3.-5. predict -> reweighted sampling -> update")
    def around_sample(original, model_runner, logits_output, forward_batch, *args, **kwargs): ...

``sglang_esamp.hooks`` collects the declarations of the shim modules (``hooks_of``) into its one list, which the
contract test checks and ``install`` registers with SGLang's ``HookRegistry``. One body may hook several targets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Tuple

BEFORE, AFTER, AROUND = "BEFORE", "AFTER", "AROUND"
_ATTR = "__esamp_hooks__"


@dataclass(frozen=True)
class Hook:
    path: str                 # sglang dotted path of the hooked function
    kind: str                 # BEFORE | AFTER | AROUND
    fn: Callable              # our hook body
    params: Tuple[str, ...]   # leading parameter names of the SGLang function we rely on
    why: str


def hook(path: str, kind: str, params: Tuple[str, ...], why: str):
    if kind not in (BEFORE, AFTER, AROUND):
        raise ValueError(f"hook kind must be BEFORE, AFTER or AROUND, got {kind!r}")

    def declare(fn: Callable) -> Callable:
        setattr(fn, _ATTR, getattr(fn, _ATTR, ()) + ((path, kind, tuple(params), why),))
        return fn
    return declare


def hooks_of(*modules) -> List[Hook]:
    """Every hook declared in these modules, in module order and then definition order."""
    out: List[Hook] = []
    for module in modules:
        for fn in vars(module).values():
            if callable(fn) and getattr(fn, "__module__", None) == module.__name__:
                out.extend(Hook(p, k, fn, params, why) for p, k, params, why in getattr(fn, _ATTR, ()))
    return out
