"""ESamp configuration: the server-level ``ESampConfig`` (the per-request value is ``wire.request.ESampRequest``).

Every knob is named, validated (messages name the field and the allowed range) and printed by ``describe()``.
Decisions DESIGN.md is silent on:
  * ``bank_slots`` is ``"auto"`` (the default) or a number. ``auto`` is resolved by the server at startup, once
    the model is loaded, from a memory budget (``memory_headroom`` of the memory SGLang's own reservation leaves),
    never above ``max_running_requests`` nor a hard cap (``algo.distiller.bank_sizing``); ``with_bank_slots(n)`` gives the
    resolved config, whose ``bank_slots`` is the int every reader (bank, counters, /esamp/stats) sees. A number wins.
    The bank itself (``ESampCore``) needs the number: code that builds one outside a server resolves first.
  * ``grad_clip`` = 0 disables clipping; ``session_max`` = 0 disables sessions (``esamp.session`` is then ignored
    and the group's slot is freed at release). ``session_max`` may not exceed ``bank_slots``; left unset it is
    ``min(4, bank_slots)`` so a small bank needs no second flag (with ``auto``: once the slots are resolved).
  * ``width``/``blocks``/``out_ln``/``gate_bias`` are overrides on top of the ``distiller`` preset (None = preset).
  * ``param_dtype`` is the bank's parameter dtype; Adam moments are always fp32 (bf16 params lose tiny updates).
  * ``seed`` seeds the per-slot init generators (slot init k of the bank draws from seed + k).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Union

import torch

from .distiller.bank_sizing import AUTO
from .distiller.distiller import DistillerShape
from .faults import parse_fault_spec
from .reference.tap_spec import TAP_PRESETS

DISTILLER_PRESETS = {
    "paper": dict(blocks=2, width=384, out_ln=False, gate_bias_init=0.0),
    "tllm": dict(blocks=1, width=64, out_ln=True, gate_bias_init=1.0),
}
OPTIMIZERS = ("adam", "sgd")
GREEDY_MODES = ("skip", "apply")
TEMPERATURE_FORMS = ("tllm", "scaled")
TRAIN_ROWS = ("all", "first_per_group")
UPDATE_MODES = ("auto", "async", "serial")
PARAM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BETA_MAX = 4.0


class ESampParamError(ValueError):
    """A bad ESamp setting; ``field`` names it (e.g. ``esamp.beta``), the message says what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field} {message}")


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_real(field: str, x, lo: float, hi: float, lo_open=False, hi_open=False):
    if not _is_real(x) or not math.isfinite(x):
        raise ESampParamError(field, f"must be a finite number, got {x!r}")
    ok_lo = x > lo if lo_open else x >= lo
    ok_hi = x < hi if hi_open else x <= hi
    if not (ok_lo and ok_hi):
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ESampParamError(field, f"must be in {rng}, got {x:g}")


def _check_int(field: str, x, lo: int, hi: Optional[int] = None):
    if not isinstance(x, int) or isinstance(x, bool):
        raise ESampParamError(field, f"must be an integer, got {x!r}")
    if x < lo or (hi is not None and x > hi):
        raise ESampParamError(field, f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {x}")


def _check_choice(field: str, x, allowed):
    if x not in allowed:
        raise ESampParamError(field, f"must be one of {list(allowed)}, got {x!r}")


@dataclass(frozen=True)
class ESampConfig:
    """Server-level ESamp settings (DESIGN §1 defaults)."""
    distiller: str = "paper"               # preset: paper (K2, w384, no LN, bias 0) | tllm (K1, r64, LN, bias 1)
    width: Optional[int] = None            # overrides of the preset
    blocks: Optional[int] = None
    out_ln: Optional[bool] = None
    gate_bias: Optional[float] = None
    optimizer: str = "adam"                # adam | sgd (no momentum)
    lr: float = 4e-4
    eps: float = 1e-4                      # Adam epsilon
    betas: Tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.5                 # per-slot grad-norm clip; 0 disables
    # divergence guard (algo/update/divergence_guard.py): after divergence_min_steps updates since a slot's (re)init, a step whose loss
    # exceeds divergence_factor x the slot's loss baseline (EMA of its own losses, floored at 0.2 x its target
    # energy), or whose mean prediction norm exceeds divergence_norm_factor x the mean target norm, resets the slot
    # (counted in divergence_resets). 0 disables a check. The defaults sit far above normal variation, measured with
    # the reference decoder on SmolLM2-135M (paper taps, 200 tokens, random and warm init, n 1 and 4, T 0.7 and 1):
    # a step's loss reached at most 3.1x its baseline (a new token's novelty: 2-3x), 14x at a forced loop break;
    # the prediction norm at most 1.0x the target's in normal decoding, 1.7x while looping (the identity init
    # predicts 0.14x, the tllm preset's output LN up to 2.7x). Diverging steps (lr 1e-2 / 3e-2) reached 650-140000x
    # and norm ratios 17-1300; with these defaults those runs reset 2-3 / 23-26 times in 199 steps, normal ones 0.
    # min_steps 5: a 5-step baseline is already a fair mean (a fresh slot's first losses are its highest), and it
    # judges an early blow-up (one measured at step 6) instead of letting it into the baseline.
    divergence_factor: float = 100.0
    divergence_norm_factor: float = 10.0
    divergence_min_steps: int = 5
    bank_slots: Union[int, str] = AUTO     # "auto": sized at server startup (algo.distiller.bank_sizing) | a number of slots
    default_beta: float = 0.25
    candidate_cap: int = 1024
    greedy: str = "skip"                   # skip: T=0 rows untouched | apply: argmax over reweighted candidates
    temperature_form: str = "tllm"         # tllm: (1+b)l/T - b*l_dist | scaled: ((1+b)l - b*l_dist)/T
    train_rows: str = "all"                # all | first_per_group
    update_mode: str = "auto"              # auto: async with a CPU core to spare, else serial (CUDA too) |
                                           # async (worker thread / CUDA side stream) | serial (inline)
    sync_free: str = "auto"                # auto: on CUDA (a host read is a device sync; graphs capture none) |
                                           # on | off (CPU's default: reads are free, adaptive widths faster)
    taps: str = "paper"                    # tap preset (algo.reference.tap_spec)
    warm_start: Optional[str] = None       # path to a distiller file in the Distiller.export_state() layout
    session_ttl_s: float = 600.0
    session_max: Optional[int] = None      # None = min(4, bank_slots)
    param_dtype: str = "float32"
    seed: int = 0
    debug_faults: Optional[str] = None     # test switch (algo.faults): e.g. "predict:0.05,update:0.05"; None = off
    max_group_size: int = 4096             # largest esamp.group_size a request may ask for
    group_linger_s: float = 30.0           # backstop: an incomplete group with no live member is freed after this
    memory_headroom: float = 0.5           # the bank may take at most this share of the memory free at startup;
                                           # bank_slots auto: this share of what SGLang's reservation leaves

    def __post_init__(self):
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        self.validate()

    def validate(self):
        p = "esamp."
        _check_choice(p + "distiller", self.distiller, DISTILLER_PRESETS)
        if self.width is not None:
            _check_int(p + "width", self.width, 1, 1 << 16)
        if self.blocks is not None:
            _check_int(p + "blocks", self.blocks, 1, 16)
        if self.out_ln is not None and not isinstance(self.out_ln, bool):
            raise ESampParamError(p + "out_ln", f"must be true, false or null, got {self.out_ln!r}")
        if self.gate_bias is not None:
            check_real(p + "gate_bias", self.gate_bias, -10.0, 10.0)
        _check_choice(p + "optimizer", self.optimizer, OPTIMIZERS)
        check_real(p + "lr", self.lr, 0.0, 1.0, lo_open=True)
        check_real(p + "eps", self.eps, 0.0, 1.0, lo_open=True)
        if not isinstance(self.betas, tuple) or len(self.betas) != 2:
            raise ESampParamError(p + "betas", f"must be a pair (beta1, beta2), got {self.betas!r}")
        for i, b in enumerate(self.betas):
            check_real(f"{p}betas[{i}]", b, 0.0, 1.0, hi_open=True)
        check_real(p + "grad_clip", self.grad_clip, 0.0, 1e6)
        for name in ("divergence_factor", "divergence_norm_factor"):
            x = getattr(self, name)
            check_real(p + name, x, 0.0, 1e12)
            if 0 < x < 1:
                raise ESampParamError(p + name, f"must be 0 (off) or >= 1, got {x:g}")
        _check_int(p + "divergence_min_steps", self.divergence_min_steps, 0, 1 << 20)
        self._check_bank_slots(p + "bank_slots")
        check_real(p + "default_beta", self.default_beta, 0.0, BETA_MAX)
        _check_int(p + "candidate_cap", self.candidate_cap, 1, 1 << 20)
        _check_choice(p + "greedy", self.greedy, GREEDY_MODES)
        _check_choice(p + "temperature_form", self.temperature_form, TEMPERATURE_FORMS)
        _check_choice(p + "train_rows", self.train_rows, TRAIN_ROWS)
        _check_choice(p + "update_mode", self.update_mode, UPDATE_MODES)
        _check_choice(p + "sync_free", self.sync_free, ("auto", "on", "off"))
        _check_choice(p + "taps", self.taps, TAP_PRESETS)
        if self.warm_start is not None and (not isinstance(self.warm_start, str) or not self.warm_start):
            raise ESampParamError(p + "warm_start", f"must be a non-empty path or null, got {self.warm_start!r}")
        check_real(p + "session_ttl_s", self.session_ttl_s, 0.0, 1e9, lo_open=True)
        if self.session_max is None and self.bank_slots != AUTO:
            object.__setattr__(self, "session_max", min(4, self.bank_slots))
        if self.session_max is not None:
            _check_int(p + "session_max", self.session_max, 0, None if self.bank_slots == AUTO else self.bank_slots)
        _check_choice(p + "param_dtype", self.param_dtype, PARAM_DTYPES)
        _check_int(p + "seed", self.seed, 0, (1 << 63) - 1)
        try:
            parse_fault_spec(self.debug_faults)
        except ValueError as e:
            raise ESampParamError(p + "debug_faults", str(e)) from None
        _check_int(p + "max_group_size", self.max_group_size, 1, 1 << 20)
        check_real(p + "group_linger_s", self.group_linger_s, 0.0, 1e9, lo_open=True)
        check_real(p + "memory_headroom", self.memory_headroom, 0.0, 1.0, lo_open=True)

    def _check_bank_slots(self, field: str):
        """``"auto"`` or an integer in [1, 65536]; a string holding an integer (a CLI or JSON value) becomes it."""
        x = self.bank_slots
        if isinstance(x, str):
            text = x.strip().lower()
            if text == AUTO:
                object.__setattr__(self, "bank_slots", AUTO)
                return
            try:
                x = int(text)
            except ValueError:
                raise ESampParamError(field, f"must be 'auto' or a number of slots in [1, 65536], got {x!r}") from None
            object.__setattr__(self, "bank_slots", x)
        if not isinstance(x, int) or isinstance(x, bool):
            raise ESampParamError(field, f"must be 'auto' or a number of slots in [1, 65536], got {x!r}")
        if not 1 <= x <= 1 << 16:
            raise ESampParamError(field, f"must be 'auto' or a number of slots in [1, 65536], got {x}")

    @property
    def bank_slots_auto(self) -> bool:
        return self.bank_slots == AUTO

    def with_bank_slots(self, slots: int) -> "ESampConfig":
        """This config with ``bank_slots`` resolved to ``slots`` (an unset ``session_max`` follows it). An explicit
        ``session_max`` above the resolved slots is refused, naming both settings."""
        session_max = None if self.bank_slots == AUTO and self.session_max is None else self.session_max
        if session_max is not None and isinstance(slots, int) and session_max > slots:
            raise ESampParamError("esamp.session_max", f"must be at most the bank's slots, got {session_max} with "
                                  f"bank_slots {slots} (resolved from {self.bank_slots!r}); lower --esamp-session-max "
                                  "or give --esamp-bank-slots a number")
        return dataclasses.replace(self, bank_slots=slots, session_max=session_max)

    # -- derived --------------------------------------------------------------------------------------------
    def divergence_guard(self):
        from .update.divergence_guard import DivergenceGuard
        return DivergenceGuard(factor=float(self.divergence_factor), norm_factor=float(self.divergence_norm_factor),
                               min_steps=self.divergence_min_steps)

    def distiller_shape(self, hidden: int) -> DistillerShape:
        base = dict(DISTILLER_PRESETS[self.distiller])
        if self.width is not None:
            base["width"] = self.width
        if self.blocks is not None:
            base["blocks"] = self.blocks
        if self.out_ln is not None:
            base["out_ln"] = self.out_ln
        if self.gate_bias is not None:
            base["gate_bias_init"] = float(self.gate_bias)
        return DistillerShape(hidden=hidden, **base)

    @property
    def torch_param_dtype(self) -> torch.dtype:
        return PARAM_DTYPES[self.param_dtype]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ESampConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ESampParamError("esamp", f"has unknown keys {unknown}; allowed: {sorted(known)}")
        return cls(**dict(d))

    def describe(self, hidden: Optional[int] = None, memory: Optional[str] = None) -> str:
        """A multi-line startup print: every knob, plus the derived distiller shape and bank memory if known."""
        lines = ["[esamp] configuration:"]
        pending = {"bank_slots": "auto (each rank sizes its bank once the model has loaded and prints how)",
                   "session_max": "None (min(4, bank_slots) once the slots are sized)"} if self.bank_slots_auto else {}
        for k, v in self.to_dict().items():
            lines.append(f"[esamp]   {k:<17} = {pending.get(k, v) if v in (AUTO, None) else v}")
        if hidden is not None:
            s = self.distiller_shape(hidden)
            lines.append(f"[esamp]   distiller shape   = {s.to_dict()} ({s.num_params():,} params/slot)")
        if memory:
            lines.append(f"[esamp]   bank memory       = {memory}")
        return "\n".join(lines)
