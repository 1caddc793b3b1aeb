"""`--esamp-*` command-line flags, generated from the fields of ``ESampConfig`` so they never drift.

Each field ``foo_bar`` becomes ``--esamp-foo-bar``; values are parsed by the field's default type (bools take
true/false, pairs take "a,b", optional fields take JSON or a plain string). A bad value is an argparse error that
names the flag. The resolved config travels to SGLang's other processes through ``wire.handoff``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import List, Tuple

from ..algo.config import ESampConfig, ESampParamError

FLAG_PREFIX = "--esamp-"
HELP = {   # fields whose default needs a word
    "bank_slots": "'auto' or a number of distiller slots per rank; auto sizes the bank at startup from "
                  "--esamp-memory-headroom of the memory SGLang's reservation leaves, at most max_running_requests "
                  "(docs/scale.md)",
}


def _flag(name: str) -> str:
    return FLAG_PREFIX + name.replace("_", "-")


def _parse_value(default, text: str):
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, tuple):
        return tuple(float(x) for x in text.split(","))
    if isinstance(default, str):
        return text
    try:  # optional fields: JSON (numbers, true/false, null) or a plain string such as a path
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def add_esamp_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("ESamp (Exploratory Sampling)")
    for f in dataclasses.fields(ESampConfig):
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        note = HELP.get(f.name)
        group.add_argument(_flag(f.name), dest=f"esamp_{f.name}", default=None, metavar="VALUE",
                           help=f"{note} (default: {shown})" if note else f"(default: {shown})")
    return group


def split_esamp_argv(argv: List[str]) -> Tuple[List[str], List[str]]:
    """(our --esamp-* tokens, everything else) — the rest goes to SGLang's own parser untouched."""
    ours, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith(FLAG_PREFIX):
            ours.append(a)
            if "=" not in a and i + 1 < len(argv):
                ours.append(argv[i + 1])
                i += 1
        else:
            rest.append(a)
        i += 1
    return ours, rest


def config_from_argv(esamp_argv: List[str], parser: argparse.ArgumentParser) -> ESampConfig:
    ns, unknown = parser.parse_known_args(esamp_argv)
    if unknown:
        parser.error(f"unrecognized ESamp arguments: {' '.join(unknown)}")
    overrides = {}
    for f in dataclasses.fields(ESampConfig):
        raw = getattr(ns, f"esamp_{f.name}")
        if raw is None:
            continue
        try:
            overrides[f.name] = _parse_value(f.default, raw)
        except ValueError as e:
            parser.error(f"{_flag(f.name)}: {e}")
    try:
        return ESampConfig(**overrides)
    except ESampParamError as e:
        name = e.field.split(".", 1)[-1].split("[", 1)[0]
        parser.error(f"{_flag(name)}: {e}")
