"""The server options the benchmark CLIs share: where the server comes from (a running one, or one started for a
model) and the extra ``launch_server`` flags for a started one."""
from __future__ import annotations

import argparse
import shlex
from typing import List, Sequence


def add_server_source(p: argparse.ArgumentParser, base_url_help: str, model_help: str) -> None:
    """``--base-url URL`` (a running server) or ``--model NAME`` (start one), one at most, plus ``--server-arg``."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--base-url", help=base_url_help)
    src.add_argument("--model", help=model_help)
    add_server_arg(p)


def add_server_arg(p: argparse.ArgumentParser, **extra) -> None:
    p.add_argument("--server-arg", action="append", default=[], metavar="ARGS",
                   help="extra launch_server arguments for the server this command starts, shell-split; repeatable "
                        "(e.g. --server-arg='--esamp-bank-slots 8')", **extra)


def server_arg_tokens(values: Sequence[str]) -> List[str]:
    """The ``--server-arg`` values as one argument list."""
    return [tok for flags in values for tok in shlex.split(flags)]
