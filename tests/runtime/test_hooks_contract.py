"""Every SGLang symbol in runtime/hooks.py still exists with the parameters our hooks rely on (sglang 0.5.23)."""
import importlib.metadata

import pytest

from sglang_esamp.runtime.hooks import TARGETS, resolve_hook, target_signature_params


def test_sglang_is_the_pinned_version():
    assert importlib.metadata.version("sglang") == "0.5.23"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.kind}:{t.path.rsplit('.', 2)[-2]}.{t.path.rsplit('.', 1)[-1]}")
def test_target_exists_with_expected_leading_params(target):
    params = target_signature_params(target.path)
    assert params[:len(target.params)] == target.params, f"{target.path}: {params}"
    assert callable(resolve_hook(target.hook))


def test_plugin_entry_point_is_registered():
    eps = importlib.metadata.entry_points(group="sglang.srt.plugins")
    assert any(ep.value == "sglang_esamp.runtime.plugin:register" for ep in eps)


def test_extension_points_we_subclass_exist():
    from sglang.srt.layers.sampler import Sampler
    from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

    assert hasattr(Sampler, "_preprocess_logits") and hasattr(Sampler, "_sample_from_probs")
    assert target_signature_params("sglang.srt.layers.sampler.Sampler._sample_from_probs")[:5] == \
        ("self", "probs", "sampling_info", "positions", "simple_sampling_case")
    assert hasattr(SchedulerOutputStreamer, "build_additional_customized_info")
    assert hasattr(SchedulerOutputStreamer, "is_request_level_customized_info_key")
