"""The frontend patches without a model: what `sgl.gen(..., esamp=...)` programs send, via a recording backend."""
import threading

import pytest
import sglang as sgl
from sglang.lang.backend.base_backend import BaseBackend

import sglang_esamp.lang as esamp_lang
from sglang_esamp.algo.config import ESampParamError


def esamp_of(params, default=None):
    """The esamp value a gen sends (in ``custom_params``, which the gateway forwards)."""
    return params.get("custom_params", {}).get("esamp", default)


class Recorder(BaseBackend):
    """A frontend backend that answers every gen with "ok" and keeps the sampling params it would send."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self._lock = threading.Lock()

    def get_model_name(self):
        return "recorder"

    def generate(self, s, sampling_params):
        sent = sampling_params.to_srt_kwargs()
        with self._lock:
            self.calls.append({"text": s.text_, "params": sent})
        return " ok", {"esamp": esamp_of(sent)}

    def sent_esamp(self):
        return [esamp_of(c["params"], "<absent>") for c in self.calls]


def run(program, **kwargs):
    backend = Recorder()
    state = program.run(backend=backend, **kwargs)
    state.sync()
    assert state.error() is None
    return backend, state


@pytest.mark.parametrize("value", [True, False, {"beta": 0.3}, {"enabled": False}, {"session": "s1", "beta": 0}])
def test_gen_carries_esamp_into_srt_kwargs(value):
    expr = sgl.gen("x", max_tokens=4, esamp=value)
    assert expr.sampling_params.to_srt_kwargs()["custom_params"]["esamp"] == value
    assert expr.sampling_params.clone().to_srt_kwargs()["custom_params"]["esamp"] == value


def test_gen_without_esamp_sends_nothing_new():
    for expr in (sgl.gen("x", max_tokens=4), sgl.gen("x", max_tokens=4, esamp=None)):
        sent = expr.sampling_params.to_srt_kwargs()
        assert "esamp" not in sent and "custom_params" not in sent


def test_gen_keeps_a_private_copy_of_the_value():
    value = {"beta": 0.3}
    expr = sgl.gen("x", esamp=value)
    value["beta"] = 9.0
    assert expr.sampling_params.to_srt_kwargs()["custom_params"]["esamp"] == {"beta": 0.3}


@pytest.mark.parametrize("value,field", [
    ({"beta": -1}, "esamp.beta"), ({"beta": 5.0}, "esamp.beta"), ({"beta": "high"}, "esamp.beta"),
    ("yes", "esamp"), (1, "esamp"), ({"temperature": 1}, "esamp"), ({"enabled": "no"}, "esamp.enabled"),
    ({"session": ""}, "esamp.session"), ({"group": ""}, "esamp.group"), ({"group_size": 0}, "esamp.group_size"),
])
def test_bad_values_raise_at_the_client(value, field):
    with pytest.raises(ESampParamError) as err:
        sgl.gen("x", esamp=value)
    assert err.value.field == field and isinstance(err.value, ValueError)


def test_esamp_with_choices_is_rejected():
    with pytest.raises(ESampParamError, match="choices"):
        sgl.gen("x", choices=["a", "b"], esamp=True)
    assert sgl.gen("x", choices=["a", "b"]).choices == ["a", "b"]   # select itself is untouched


def test_bad_value_in_a_program_raises_from_run_before_any_request():
    @sgl.function
    def prog(s):
        s += "Hi"
        s += sgl.gen("a", max_tokens=4, esamp={"beta": 9})

    backend = Recorder()
    with pytest.raises(ESampParamError, match="esamp.beta"):
        prog.run(backend=backend)
    assert backend.calls == []


def test_fork_branches_share_one_group_of_size_n():
    @sgl.function
    def poem(s, topic):
        s += "Write a poem about " + topic + ".\n"
        forks = s.fork(4)
        for f in forks:
            f += sgl.gen("poem", max_tokens=8, temperature=1.0, esamp={"beta": 0.3})
        forks.join()

    backend, state = run(poem, topic="the sea")
    sent = backend.sent_esamp()
    assert len(sent) == 4
    assert all(v["beta"] == 0.3 and v["group_size"] == 4 for v in sent)
    assert len({v["group"] for v in sent}) == 1 and sent[0]["group"].startswith("fork-")
    assert state["poem"] == [" ok"] * 4


def test_groups_are_per_fork_point_and_per_gen():
    @sgl.function
    def prog(s):
        s += "Q"
        first = s.fork(2)
        for f in first:
            f += sgl.gen("a", max_tokens=4, esamp=True)
            f += sgl.gen("b", max_tokens=4)                  # no ESamp: not counted, not stamped
            f += sgl.gen("c", max_tokens=4, esamp=True)
        first.join()
        second = s.fork(3)
        for f in second:
            f += sgl.gen("d", max_tokens=4, esamp=True)
        second.join()

    backend, _ = run(prog)
    members = {}
    for c in backend.calls:
        v = esamp_of(c["params"])
        if v is not None:
            members.setdefault((v["group"], v["group_size"]), []).append(c)
    assert sorted(len(m) for m in members.values()) == [2, 2, 3] and len(backend.calls) == 9
    (g0, g1), (g2,) = sorted(g for g, size in members if size == 2), [g for g, size in members if size == 3]
    fork1 = g0[:-len("-0")]
    assert (g0, g1) == (fork1 + "-0", fork1 + "-1")                  # the first fork: gen a, then gen c
    assert g2.endswith("-0") and not g2.startswith(fork1)             # the second fork: a fresh key
    assert all(c["text"].count(" ok") == 2 for c in members[(g1, 2)])  # c came after a and b in its branch
    assert sum(esamp_of(c["params"]) is None for c in backend.calls) == 2   # the two "b" gens


def test_unforked_disabled_and_explicit_groups_are_left_alone():
    @sgl.function
    def prog(s):
        s += sgl.gen("solo", max_tokens=4, esamp=True)
        forks = s.fork(2)
        for i, f in enumerate(forks):
            f += sgl.gen("off", max_tokens=4, esamp=False)
            f += sgl.gen("off2", max_tokens=4, esamp={"enabled": False, "beta": 0.2})
            f += sgl.gen("mine", max_tokens=4, esamp={"group": "g", "group_size": 7})
        forks.join()

    backend, _ = run(prog)
    sent = backend.sent_esamp()
    assert sent[0] is True                                  # the server stamps a per-request group
    assert sorted(map(repr, sent[1:])) == sorted(map(repr, [False, False, {"enabled": False, "beta": 0.2},
                                                            {"enabled": False, "beta": 0.2},
                                                            {"group": "g", "group_size": 7},
                                                            {"group": "g", "group_size": 7}]))


def test_copy_is_a_group_of_one_and_nested_forks_get_their_own_key():
    @sgl.function
    def prog(s):
        s += "Q"
        with s.copy() as c:
            c += sgl.gen("c", max_tokens=4, esamp=True)
        outer = s.fork(2)
        for o in outer:
            inner = o.fork(3)
            for i in inner:
                i += sgl.gen("x", max_tokens=4, esamp=True)
            inner.join()
        outer.join()

    backend, _ = run(prog)
    sent = backend.sent_esamp()
    ones = [v for v in sent if v["group_size"] == 1]
    threes = [v for v in sent if v["group_size"] == 3]
    assert len(ones) == 1 and len(threes) == 6
    assert len({v["group"] for v in threes}) == 2            # one group per inner fork point


def test_group_size_counts_samples_per_gen():
    from sglang_esamp.lang.forks import FORK_ATTR, with_fork_group

    class Executor:
        pass

    ex = Executor()
    setattr(ex, FORK_ATTR, ("k", 4))
    assert with_fork_group(ex, True, n=2) == {"group": "fork-k-0", "group_size": 8}
    assert with_fork_group(ex, {"group_size": 5}, n=2) == {"group": "fork-k-1", "group_size": 5}
    setattr(ex, FORK_ATTR, ("k", 4096))
    with pytest.raises(ESampParamError, match="esamp.group_size"):
        with_fork_group(ex, True, n=2)


def test_run_defaults_still_apply_and_esamp_is_per_gen():
    @sgl.function
    def prog(s):
        s += sgl.gen("a", max_tokens=4, esamp=True)
        s += sgl.gen("b", max_tokens=4)

    backend, _ = run(prog, temperature=0.5, top_p=0.9)
    a, b = (c["params"] for c in backend.calls)
    assert a["temperature"] == b["temperature"] == 0.5 and a["top_p"] == 0.9
    assert esamp_of(a) is True and esamp_of(b) is None and "custom_params" not in b


def test_run_batch_with_esamp_as_a_program_argument():
    @sgl.function
    def prog(s, topic, esamp):      # run_batch first traces this with placeholder arguments to find the prefix
        s += "A long enough shared prefix for the batch. " * 4
        s += sgl.gen("a", max_tokens=4, esamp=esamp)
        s += topic

    backend = Recorder()
    states = prog.run_batch([{"topic": "x", "esamp": True}, {"topic": "y", "esamp": {"beta": 0.1}}],
                            backend=backend)
    assert all(s.error() is None for s in states)
    assert sorted(map(repr, backend.sent_esamp())) == sorted(map(repr, [True, {"beta": 0.1}]))
    with pytest.raises(ESampParamError):
        prog.run_batch([{"topic": "x", "esamp": 2}, {"topic": "y", "esamp": True}], backend=Recorder(),
                       num_threads=1)


def test_install_is_idempotent_and_uninstall_restores_sglang():
    from sglang.lang.interpreter import StreamExecutor
    from sglang.lang.ir import SglSamplingParams

    patched = (sgl.gen, SglSamplingParams.to_srt_kwargs, StreamExecutor.fork)
    esamp_lang.install()
    assert (sgl.gen, SglSamplingParams.to_srt_kwargs, StreamExecutor.fork) == patched
    try:
        esamp_lang.uninstall()
        assert not esamp_lang.installed() and not hasattr(SglSamplingParams, "esamp")
        assert sgl.gen is sgl.lang.api.gen and not hasattr(sgl.gen, "__wrapped__")
        with pytest.raises(TypeError):
            sgl.gen("x", esamp=True)
    finally:
        esamp_lang.install()
    assert esamp_lang.installed() and sgl.gen("x", esamp=True).sampling_params.esamp is True
    assert esamp_lang.gen("x", esamp={"beta": 0.1}).sampling_params.esamp == {"beta": 0.1}
