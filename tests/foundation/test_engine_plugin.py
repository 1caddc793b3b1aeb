"""The real SGLang Engine on the tiny model, with our plugin loaded in its scheduler process."""
import os

import pytest


@pytest.mark.slow
def test_engine_runs_and_plugin_reaches_the_scheduler(tiny_model_path, tmp_path, monkeypatch):
    trace = tmp_path / "trace"
    monkeypatch.setenv("SGLANG_ESAMP_TRACE_DIR", str(trace))
    import multiprocessing
    from multiprocessing import resource_tracker

    import sglang_esamp

    # a semaphore made before the engine (tqdm's lock, loky's) registers with this process's resource tracker
    semaphore = multiprocessing.get_context("spawn").Semaphore()   # a named one (fork context: unnamed)
    tracker_pid = resource_tracker._resource_tracker._pid
    llm = sglang_esamp.Engine(model_path=tiny_model_path, esamp={"bank_slots": 4}, log_level="error",
                              max_total_tokens=8192)
    try:
        out = llm.generate(["Return the", "The value of"], {"temperature": 0, "max_new_tokens": 6})
        assert len(out) == 2 and all(o["meta_info"]["completion_tokens"] == 6 for o in out)
        multi = llm.generate("Return the", {"temperature": 1.0, "max_new_tokens": 5, "n": 3,
                                            "ignore_eos": True, "esamp": {"beta": 0.3}})
        assert len(multi) == 3
        groups = {o["meta_info"]["esamp"]["group"] for o in multi}
        assert len(groups) == 1  # the n siblings share one distiller
        assert all(o["meta_info"]["esamp"]["steps"] > 0 for o in multi)
        # the Engine path (no HTTP layer): malformed shapes raise naming the field; sessions are server-issued
        for bad, field in (({"custom_params": "x", "esamp": True}, "custom_params"),
                           ({"esamp": {"session": "made-up"}}, "esamp.session"),
                           ({"esamp": True, "custom_params": {"esamp_group": {"key": "k", "size": 1}}},
                            "custom_params.esamp_group")):
            with pytest.raises(ValueError, match=field):
                llm.generate("Return the", {"max_new_tokens": 2, **bad})
        first = llm.generate("Return the", {"max_new_tokens": 3, "esamp": {"session": "new"}})["meta_info"]["esamp"]
        again = llm.generate("Return the", {"max_new_tokens": 3, "esamp": {"session": first["session"]}})
        assert first["session"].startswith("s-") and again["meta_info"]["esamp"]["slot"] == first["slot"]
        state = llm.get_server_info()["internal_states"][0]["esamp"]
    finally:
        llm.shutdown()
    # shutdown ends the engine's processes, not the tracker (else a warning and a KeyError traceback at exit)
    assert resource_tracker._resource_tracker._pid == tracker_pid
    assert resource_tracker._resource_tracker._check_alive(), "SGLang's shutdown ended the resource tracker"
    del semaphore
    pids = {int(p.name.split("-")[1].split(".")[0]) for p in trace.glob("plugin-*.txt")}
    # the scheduler registered the plugin and serves ESamp; the detokenizer registered it too. (This process
    # may have loaded plugins before the trace dir was set, when another Engine test ran first.)
    assert state["pid"] in pids and state["pid"] != os.getpid()
    assert len(pids - {os.getpid()}) >= 2
    c = state["counters"]
    assert c["updates"] > 0 and c["bank_occupancy"] == c["sessions_live"] == 1 and c["groups_released"] == 3
    # SGLang's prefix-caching copy of the n=3 request (max_new_tokens 0) is no member of the group
    assert c["members_left_before_decode"] == 0 and c["groups_expired"] == 0
