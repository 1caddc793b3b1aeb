"""Every SGLang symbol in sglang_esamp/hooks.py still exists as we rely on it (sglang 0.5.23): hooked functions and
overridden methods with their leading parameters, wrapped/called functions, and the attributes we read."""
import dataclasses
import importlib.metadata
import inspect
import pkgutil
import re

import pytest

from sglang_esamp.hooks import (ATTRIBUTES, CALLS, HOOKS, OPTIONAL_HOOKS, OVERRIDES, HookNotAppliedError,
                                 check_hooks_applied, target_signature_params)


def _id(entry):
    return entry.path.rsplit(".", 2)[-2] + "." + entry.path.rsplit(".", 1)[-1]


def test_sglang_is_the_pinned_version():
    assert importlib.metadata.version("sglang") == "0.5.23"


@pytest.mark.parametrize("target", tuple(dict.fromkeys(HOOKS + OPTIONAL_HOOKS)), ids=lambda t: f"{t.kind}:{_id(t)}")
def test_hook_target_exists_with_expected_leading_params(target):
    params = target_signature_params(target.path)
    assert params[:len(target.params)] == target.params, f"{target.path}: {params}"
    assert callable(target.fn) and target.fn.__module__.startswith("sglang_esamp.")


@pytest.mark.parametrize("entry", OVERRIDES + CALLS, ids=_id)
def test_overridden_and_called_symbols_keep_their_leading_params(entry):
    params = target_signature_params(entry.path)
    assert params[:len(entry.params)] == entry.params, f"{entry.path}: {params}"


def _has_attribute(owner, name: str) -> bool:
    if not isinstance(owner, type):
        return hasattr(owner, name)
    if hasattr(owner, name) or any(name in getattr(k, "__annotations__", {}) for k in owner.__mro__):
        return True
    if dataclasses.is_dataclass(owner) and name in {f.name for f in dataclasses.fields(owner)}:
        return True
    pattern = re.compile(rf"self\.{name}\b(\s*[:=]|\s*,[^=\n]*=)")   # assigned in a method (e.g. __init__)
    return any(pattern.search(inspect.getsource(k)) for k in owner.__mro__
               if k.__module__.startswith("sglang"))


@pytest.mark.parametrize("entry", ATTRIBUTES, ids=lambda a: a.owner.rsplit(".", 1)[-1])
def test_attributes_we_read_exist(entry):
    owner = pkgutil.resolve_name(entry.owner)
    missing = [n for n in entry.names if not _has_attribute(owner, n)]
    assert not missing, f"{entry.owner} lacks {missing}"


def test_the_tap_argument_positions_match_the_logits_processor():
    from sglang_esamp.runtime.taps import LOGITS_PROCESSOR_HIDDEN

    params = target_signature_params("sglang.srt.layers.logits_processor.LogitsProcessor.forward")[1:]  # no self
    index, name = LOGITS_PROCESSOR_HIDDEN
    assert params[index] == name


def test_our_sampler_overrides_only_listed_methods():
    from sglang.srt.layers.sampler import Sampler

    from sglang_esamp.runtime.sampler import ESampSampler

    ours = {n for n, v in vars(ESampSampler).items() if callable(v) and n in vars(Sampler)}
    listed = {o.path.rsplit(".", 1)[-1] for o in OVERRIDES if ".Sampler." in o.path}
    assert ours == listed


def test_plugin_entry_point_is_registered():
    eps = importlib.metadata.entry_points(group="sglang.srt.plugins")
    assert any(ep.value == "sglang_esamp.plugin:register" for ep in eps)


def test_a_hook_sglang_did_not_apply_stops_the_start_naming_it():
    every = {t.path for t in HOOKS}
    check_hooks_applied(every)
    missing = HOOKS[2].path
    with pytest.raises(HookNotAppliedError, match=missing.replace(".", r"\.")):
        check_hooks_applied(every - {missing})
