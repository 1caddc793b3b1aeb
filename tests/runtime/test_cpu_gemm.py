"""runtime.cpu_gemm: bf16 GEMMs on CPU computed in fp32 (opt-in) give bf16's numbers, count their calls, refresh
after weight updates, and leave everything else to SGLang; and the real server serves through them."""
import pytest
import requests
import torch
import torch.nn.functional as F

from sglang_esamp.runtime import cpu_gemm
from tests.server_utils import running_server


@pytest.fixture
def layer():
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod

    torch.manual_seed(0)
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter((torch.randn(1024, 896) * 0.03).bfloat16(), requires_grad=False)
    return module, UnquantizedLinearMethod()


def _apply(method, module, x, bias=None):
    return cpu_gemm.around_linear_apply(type(method).apply, method, module, x, bias)


def _assert_left_to_sglang(method, module, x):
    before = dict(cpu_gemm.calls)
    assert torch.equal(_apply(method, module, x), F.linear(x, module.weight))
    assert cpu_gemm.calls == before


def test_off_by_default_it_is_sglang_exactly(layer, monkeypatch):
    monkeypatch.delenv(cpu_gemm.ENV, raising=False)
    module, method = layer
    _assert_left_to_sglang(method, module, torch.randn(80, 896).bfloat16())


def test_fp32_route_gives_bf16_numbers_up_to_summation_order(layer, monkeypatch):
    monkeypatch.setenv(cpu_gemm.ENV, "1")
    module, method = layer
    x = torch.randn(80, 896).bfloat16()
    bias = (torch.randn(1024) * 0.1).bfloat16()
    before = cpu_gemm.calls["linear"]
    for b in (None, bias):
        ours, sglang = _apply(method, module, x, b), F.linear(x, module.weight, b)
        assert ours.dtype == torch.bfloat16 and ours.shape == sglang.shape
        differ = ours != sglang
        assert differ.float().mean() < 2e-3      # measured 2e-4: one rounding flip where the fp32 sums differ
        ulp = sglang.float().abs().clamp_min(1e-30) * 2.0 ** -7
        assert ((ours.float() - sglang.float()).abs() <= ulp * 1.01 + 1e-6).all()   # never more than one bf16 ulp
    assert cpu_gemm.calls["linear"] == before + 2


def test_other_dtypes_and_devices_are_left_to_sglang(layer, monkeypatch):
    monkeypatch.setenv(cpu_gemm.ENV, "1")
    module, method = layer
    module.weight = torch.nn.Parameter(module.weight.float(), requires_grad=False)
    _assert_left_to_sglang(method, module, torch.randn(4, 896))


def test_the_fp32_copy_follows_weight_updates(layer, monkeypatch):
    monkeypatch.setenv(cpu_gemm.ENV, "1")
    module, method = layer
    x = torch.randn(8, 896).bfloat16()
    first = _apply(method, module, x)
    new = (torch.randn(1024, 896) * 0.03).bfloat16()
    module.weight.data.copy_(new)            # how SGLang's loaders write: the tensor's version does not move
    cpu_gemm.weights_replaced()              # ... so the weight-update hooks say so
    second = _apply(method, module, x)
    assert not torch.equal(first, second)
    assert (second != F.linear(x, new)).float().mean() < 2e-3
    with torch.no_grad():
        module.weight.mul_(0)                # an in-place write through the parameter bumps its version
    assert torch.count_nonzero(_apply(method, module, x)) == 0


@pytest.mark.parametrize("shim", ["after_disk_update", "after_tensor_update", "after_end_update"])
def test_every_weight_update_hook_invalidates_the_fp32_copies(shim, layer, monkeypatch):
    from sglang_esamp.runtime import shims

    monkeypatch.setenv(cpu_gemm.ENV, "1")
    module, _ = layer
    stale = cpu_gemm.fp32_weight(module)
    module.weight.data.copy_(module.weight * 2)
    assert cpu_gemm.fp32_weight(module) is stale                  # unseen by the version counter ...
    getattr(shims, shim)((True, "ok"), object(), "path")          # ... until SGLang's updater returns
    assert torch.equal(cpu_gemm.fp32_weight(module), module.weight.float())


@pytest.mark.slow
def test_the_server_serves_through_it_and_counts(tmp_path):
    with running_server(["--log-level", "warning"], tmp_path / "server.log",
                        env_extra={cpu_gemm.ENV: "1"}) as (base, _):
        prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        r = requests.post(base + "/generate", json={"text": prompt,
                                                    "sampling_params": {"temperature": 0, "max_new_tokens": 16}})
        assert r.status_code == 200 and "Paris" in r.json()["text"], r.text
        r = requests.post(base + "/generate", json={"text": prompt, "sampling_params": {
            "temperature": 1.0, "max_new_tokens": 8, "n": 2, "esamp": {"beta": 0.25}}})
        assert r.status_code == 200, r.text
        rank = requests.get(base + "/esamp/stats", timeout=30).json()["ranks"][0]
        assert rank["cpu_fp32_gemm"]["linear"] > 0 and rank["cpu_fp32_gemm"]["lm_head"] > 0
        assert rank["counters"]["candidate_rows_reweighted"] > 0
