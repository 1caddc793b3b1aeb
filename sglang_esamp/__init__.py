"""sglang-esamp: Exploratory Sampling as a backend of the SGLang serving runtime.

Layout (docs/DESIGN.md):
  algo/     the algorithm in plain torch (no SGLang import)
  runtime/  the SGLang adapter (plugin hooks, taps, sampler, slot lifecycle)
  serve/    server-process side: HTTP surface, tokenizer hooks, CPU defaults, local server
  engine.py, launch_server.py, hooks.py, plugin.py  the composition root (Engine, server entry point, hooks)
  lang/     SGLang frontend support (sgl.gen(..., esamp=...))
  rl/       RL trainers on ESamp rollouts (TRL's GRPOTrainer: rl.trl)
  models/   offline real models shipped in registry wheels, and a tiny test model builder
Importing this package is light: SGLang is imported only when ``Engine`` or the runtime is used.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(name)
