"""``--config FILE.yaml`` for every CLI: YAML values become argparse defaults, explicit flags override them.

A pretraining YAML has shared top-level keys (``SHARED``) and one section per stage (``record:``, ``train:``,
``export:``). Keys use the flag names with dashes or underscores (``max_rows`` == ``max-rows``). Unknown keys are
errors that name the key, so a typo never silently falls back to a default. Relative paths are taken relative
to the working directory (run from the repository root).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

import yaml

SHARED = ("model", "taps", "preset", "run_dir", "seed")
SECTIONS = ("record", "train", "export", "pipeline")


def load_yaml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"--config: no such file: {path}")
    cfg = yaml.safe_load(p.read_text()) or {}
    if not isinstance(cfg, dict):
        raise SystemExit(f"--config {path}: expected a mapping at the top level")
    unknown = sorted(set(cfg) - set(SHARED) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--config {path}: unknown top-level keys {unknown}; allowed {list(SHARED + SECTIONS)}")
    return cfg


def stage_defaults(cfg: dict, section: str) -> dict:
    """Shared keys plus the stage's own section, with dashes turned into underscores."""
    out = {k: v for k, v in cfg.items() if k in SHARED}
    sec = cfg.get(section) or {}
    if not isinstance(sec, dict):
        raise SystemExit(f"--config: section '{section}' must be a mapping")
    out.update(sec)
    return {k.replace("-", "_"): v for k, v in out.items()}


def parse_args(parser: argparse.ArgumentParser, section: str, argv: Optional[List[str]] = None,
               required: tuple = ()) -> argparse.Namespace:
    parser.add_argument("--config", help="pretraining YAML (configs/pretrain/*.yaml); flags override it")
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        defaults = stage_defaults(load_yaml(pre.config), section)
        known = {a.dest for a in parser._actions}
        shared_unused = set(SHARED) - known  # shared keys a stage has no flag for are fine (e.g. seed)
        unknown = sorted(k for k in defaults if k not in known and k not in shared_unused)
        if unknown:
            parser.error(f"--config {pre.config}: unknown keys in '{section}': {unknown}")
        actions = {a.dest: a for a in parser._actions}
        checked = {}
        for k, v in defaults.items():
            if k not in known:
                continue
            act = actions[k]
            # argparse neither converts nor checks defaults; YAML reads `1e-3` as a string
            if act.type is not None and isinstance(v, str):
                try:
                    v = act.type(v)
                except (TypeError, ValueError):
                    parser.error(f"--config {pre.config}: '{k}: {v}' is not a valid {act.type.__name__}")
            if act.choices is not None and v not in act.choices:
                parser.error(f"--config {pre.config}: '{k}: {v}' not in {list(act.choices)}")
            checked[k] = v
        parser.set_defaults(**checked)
    args = parser.parse_args(argv)
    for name in required:
        if getattr(args, name) in (None, ""):
            parser.error(f"--{name.replace('_', '-')} is required (as a flag or in the --config YAML)")
    return args
