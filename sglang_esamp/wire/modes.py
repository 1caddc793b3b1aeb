"""Server modes ESamp cannot serve, refused at startup with the flag to change (never silently inert).

``check_server_mode(server_args)`` runs twice: in the launching process right after SGLang parsed its arguments
(``launch_server``, ``Engine``: the user sees the message at once) and in each scheduler when ESamp attaches to
the model runner (any other way of starting SGLang with the plugin). It reads ``ServerArgs`` attributes only.

Graph replay runs a captured forward without its Python, so ESamp's taps would miss every replayed step. Only the
decode phase matters (a prefill step is never reweighted, runtime/step.py). SGLang 0.5.23 spells the decode graph
four ways; ``decode_graph_backend`` reads them in SGLang's own precedence (``cuda_graph_hook``: the JSON
``--cuda-graph-config`` over ``--cuda-graph-backend-decode`` over ``--disable-decode-cuda-graph`` over the deprecated
``--disable-cuda-graph``; default ``full``), so a user who follows SGLang's current flag is not refused, and one who
turned only prefill graphs off is. On ``--device cpu`` SGLang's CPU graph runner captures the decode forward iff
``--enable-torch-compile`` (whatever the CUDA-graph flags say): refused too, as unproven.

``SGLANG_ESAMP_ALLOW_CUDA_GRAPH=1`` lifts the CUDA-graph rule and nothing else, for the run that proves ESamp
under graph replay on a GPU (``benchmarks/gpu/lease.sh``, issues #39, #45); each process that serves CUDA graphs
under it says so on stderr.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, List, Tuple

ALLOW_CUDA_GRAPH_ENV = "SGLANG_ESAMP_ALLOW_CUDA_GRAPH"
_CUDA_GRAPH_FLAG = "--cuda-graph-backend-decode"
_DISABLED = "disabled"
_warned_graph_lift = False


class UnsupportedModeError(RuntimeError):
    """A server mode in which ESamp would be silently inert or wrong: refused at startup, naming the flag."""


def _on_cpu(a) -> bool:
    return str(getattr(a, "device", None) or "") == "cpu"


def decode_graph_backend(a) -> str:
    """The decode phase's graph backend the arguments ask for (SGLang's precedence; see the module docstring)."""
    config = getattr(a, "cuda_graph_config", None)
    decode = config.get("decode") if isinstance(config, dict) else getattr(config, "decode", None)
    backend = decode.get("backend") if isinstance(decode, dict) else getattr(decode, "backend", None)
    if backend is not None:
        return str(backend)
    if getattr(a, "cuda_graph_backend_decode", None) is not None:
        return str(a.cuda_graph_backend_decode)
    if getattr(a, "disable_decode_cuda_graph", False) or getattr(a, "disable_cuda_graph", False):
        return _DISABLED
    return "full"


def _cuda_decode_graph(a) -> bool:
    return not _on_cpu(a) and decode_graph_backend(a) != _DISABLED


def _on(name: str) -> Callable:
    return lambda a: bool(getattr(a, name, False))


def _above_one(name: str) -> Callable:
    return lambda a: int(getattr(a, name, 1) or 1) > 1


# (flag, predicate on ServerArgs, why ESamp cannot serve it, what to do)
RULES: Tuple[Tuple[str, Callable, str, str], ...] = (
    (_CUDA_GRAPH_FLAG, _cuda_decode_graph,
     "decode-graph replay runs the captured forward without its Python, so ESamp's hidden-state taps would never "
     "see a replayed step and those steps would sample without ESamp",
     "start the server with --cuda-graph-backend-decode disabled (or the deprecated --disable-cuda-graph; Engine: "
     "cuda_graph_backend_decode='disabled')"),
    ("--enable-torch-compile", lambda a: _on_cpu(a) and bool(getattr(a, "enable_torch_compile", False)),
     "on --device cpu SGLang's CPU graph runner captures the torch.compile'd decode forward, and ESamp's taps under "
     "it are not proven",
     "run without --enable-torch-compile on CPU"),
    ("--speculative-algorithm", lambda a: getattr(a, "speculative_algorithm", None) is not None,
     "speculative decoding chooses tokens by draft verification, not by the sampler ESamp reweights",
     "run without --speculative-algorithm"),
    ("--enable-deterministic-inference", _on("enable_deterministic_inference"),
     "ESamp rows draw their noise outside SGLang's deterministic sampling path",
     "run without --enable-deterministic-inference"),
    ("--enable-mixed-chunk", _on("enable_mixed_chunk"),
     "decode rows inside a mixed prefill+decode batch are not reweighted or trained on",
     "run without --enable-mixed-chunk"),
    ("--pp-size", _above_one("pp_size"),
     "the shallow tap and the LM head live on different pipeline stages",
     "use --pp-size 1"),
)


def cuda_graph_allowed() -> bool:
    return os.environ.get(ALLOW_CUDA_GRAPH_ENV) == "1"


def _warn_graph_lift() -> None:
    global _warned_graph_lift
    if not _warned_graph_lift:
        _warned_graph_lift = True
        print(f"WARNING [esamp] {ALLOW_CUDA_GRAPH_ENV}=1: serving ESamp under CUDA-graph replay, a mode not yet "
              f"proven on a real server (the {_CUDA_GRAPH_FLAG} refusal is lifted for this run only)",
              file=sys.stderr, flush=True)


def refusals(server_args) -> List[str]:
    """One message per rule the arguments break (empty: ESamp can serve this mode)."""
    out = []
    for flag, broken, why, fix in RULES:
        if server_args is not None and broken(server_args):
            if flag == _CUDA_GRAPH_FLAG and cuda_graph_allowed():
                _warn_graph_lift()
                continue
            out.append(f"ESamp cannot serve this mode ({flag}): {why}. Fix: {fix}, or run without the ESamp "
                       "plugin (SGLANG_ESAMP=0).")
    return out


def check_server_mode(server_args) -> None:
    problems = refusals(server_args)
    if problems:
        raise UnsupportedModeError("\n".join(problems))
