"""The debug fault injector: its spec is validated (naming the flag), it is seeded, it draws nothing when off."""
import pytest
import torch

from sglang_esamp.algo.config import ESampConfig, ESampParamError
from sglang_esamp.algo.counters import CounterRegistry
from sglang_esamp.algo.faults import FaultInjector, InjectedFault


@pytest.mark.parametrize("spec", ["predict", "predict:2", "explode:0.1", "predict:x", 3])
def test_a_bad_spec_is_a_config_error_naming_the_flag(spec):
    with pytest.raises(ESampParamError) as e:
        ESampConfig(debug_faults=spec)
    assert e.value.field == "esamp.debug_faults"


def test_faults_fire_at_their_rate_reproducibly_and_are_counted():
    def run():
        c = CounterRegistry()
        f = FaultInjector("predict:0.3,update:1", seed=7, counters=c)
        fired = [f.fires("predict") for _ in range(1000)]
        with pytest.raises(InjectedFault, match="update"):
            f.maybe_raise("update")
        f.maybe_raise("sample")          # not in the spec: never fires
        return fired, c.get("faults_injected")
    (a, na), (b, nb) = run(), run()
    assert a == b and 250 < sum(a) < 350 and na == nb == sum(a) + 1


def test_no_spec_means_no_faults():
    f = FaultInjector(None)
    assert not f.enabled and not any(f.fires(p) for p in ("predict", "sample", "update", "nan_taps"))


def test_tap_corruption_hits_one_row_of_the_step_copy():
    f = FaultInjector("nan_taps:1,huge_taps:1", seed=0)
    src, tgt = torch.ones(4, 3), torch.ones(4, 3)
    f.corrupt_taps(src, tgt)
    assert int(torch.isnan(src).any(dim=1).sum()) == 1 and int((tgt == 1e6).all(dim=1).sum()) == 1
