"""One ESamp step without a server (runtime/step.py, runtime/sampler.py): fixture batches through ``step.plan`` and
``step.run`` around SGLang's own Sampler (the real class, in a scoped SGLang context), with the runtime's real parts
(core, group table, members, tap buffers, faults). Mirrors the numbered steps: plan, taps, predict, sample,
update (and settle), leave."""
import types

import pytest
import torch

from sglang_esamp.runtime import step

from .step_fixtures import Batch, make_runtime, one_step, req

# -- 1. plan ---------------------------------------------------------------------------------------------------------
def test_plan_takes_only_the_esamp_rows_and_joins_their_group():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 2), req("x", None, "x", 1), req("b", {"beta": 0.5}, "p", 2)]
    planned = step.plan(rt, Batch(reqs).forward, types.SimpleNamespace(reqs=reqs))
    assert planned.rows.tolist() == [0, 2] and planned.terms.slots.tolist() == [0, 0]
    assert planned.terms.distiller_coef.tolist() == [1.0, 1.0] and rt.core.occupancy == 1
    assert rt.counters.get("decode_steps") == 1


def test_plan_refuses_a_row_map_that_does_not_match_the_forward_batch():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    batch = Batch(reqs)
    batch.forward.rids = ["someone-else"]
    with pytest.raises(RuntimeError, match="row map"):
        step.plan(rt, batch.forward, batch.schedule)


def test_a_mixed_batch_is_skipped_and_counted():
    rt = make_runtime()
    assert step.plan(rt, Batch([req("a", {"beta": 0.5}, "p", 1)], mode="MIXED").forward,
                     types.SimpleNamespace(reqs=[])) is None
    assert rt.counters.get("mixed_batches_skipped") == 1


# -- 2.-5. one decode step ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["serial", "async"])
def test_a_decode_step_reweights_trains_and_counts_on_the_scheduler_thread(mode):
    rt = make_runtime(mode=mode)
    reqs = [req("a", {"beta": 0.5}, "p", 2), req("b", {"beta": 0.5}, "p", 2), req("x", None, "x", 1)]
    planned, ids = one_step(rt, Batch(reqs, top_k=8))
    assert ids.shape == (3,) and planned.out is not None
    assert all(int(t) in set(c.tolist()) for t, c in zip(ids[:2], planned.out.cand_ids))   # drawn from the candidates
    assert rt.counters.get("esamp_steps") == 1 and rt.counters.get("stock_draws_skipped") == 0
    a, b = (rt.members.member_of(r) for r in reqs[:2])
    step.settle(rt)            # the update's measurements are applied here, on this thread
    assert (a.rows, b.rows) == (1, 1) and a.multi_candidate_rows == 1
    st = rt.core.stats()
    assert st["updates"] == 1 and st["candidate_rows_reweighted"] == 2 and st["finite_losses"] == 1


def test_the_update_thread_writes_nothing_into_members():
    """async: until settle runs, the members' counts are untouched (the update returns what it measured)."""
    rt = make_runtime(mode="async")
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    one_step(rt, Batch(reqs))
    rt.core.runner.wait()     # the update finished on its thread ...
    m = rt.members.member_of(reqs[0])
    assert m.rows == 0        # ... and wrote nothing into the member
    step.settle(rt)
    assert m.rows == 1


def test_an_all_esamp_batch_skips_sglangs_own_draw():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    one_step(rt, Batch(reqs))
    assert rt.counters.get("stock_draws_skipped") == 1


def test_a_tap_miss_samples_stock_and_is_counted_per_request():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1), req("x", None, "x", 1)]
    batch = Batch(reqs)
    planned, ids = one_step(rt, batch, taps=False)
    assert planned.out is None and planned.h_hat is None
    assert rt.counters.get("tap_misses") == 1 and rt.counters.get("esamp_steps") == 0
    assert rt.members.member_of(reqs[0]).skipped_rows == 1 and rt.core.stats()["updates"] == 0


@pytest.mark.parametrize("point", ["predict", "sample"])
def test_a_fault_in_the_step_is_contained(point):
    rt = make_runtime(faults=f"{point}:1")
    reqs = [req("a", {"beta": 0.5}, "p", 1), req("x", None, "x", 1)]
    planned, ids = one_step(rt, Batch(reqs))
    assert ids.shape == (2,)                                   # the step still sampled every row (stock)
    st = rt.core.stats()
    assert rt.counters.get("step_errors") == 1 and st["error_resets"] == 1 and st["updates"] == 0
    assert rt.members.member_of(reqs[0]).skipped_rows == 1


def test_an_update_fault_surfaces_at_the_next_settle_against_its_own_step():
    rt = make_runtime(faults="update:1", mode="async")
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    one_step(rt, Batch(reqs))
    assert rt.counters.get("esamp_steps") == 1 and rt.counters.get("step_errors") == 0
    step.settle(rt)
    assert rt.counters.get("step_errors") == 1 and rt.core.stats()["error_resets"] == 1
    assert rt.members.member_of(reqs[0]).skipped_rows == 0   # it sampled with ESamp
    step.settle(rt)
    assert rt.counters.get("step_errors") == 1               # contained once: the failure came back as one value


def test_plan_does_not_wait_for_the_update_in_flight_but_the_rule_does():
    """The forward overlaps the previous step's update: ``plan`` (before the forward) applies only finished
    updates; the wait happens before the distiller's weights are read, and is timed as ``update_wait``."""
    import threading

    rt = make_runtime(mode="async")
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    one_step(rt, Batch(reqs))
    gate = threading.Event()
    rt.core.runner.wait()
    rt.core.runner.submit(lambda: gate.wait(timeout=30))      # an update still running
    seen, expire = [], rt.table.expire
    rt.table.expire = lambda: (seen.append(rt.core.runner.pending), expire())   # plan's state after its settle
    waited_before = rt.counters.get("time_update_wait_s")
    threading.Timer(0.3, gate.set).start()
    planned, ids = one_step(rt, Batch(reqs))
    assert seen == [True]                                     # planned while the update still ran
    assert planned is not None and ids is not None and planned.error is None
    assert rt.counters.get("esamp_steps") == 2                 # and its own update was submitted after it
    assert rt.counters.get("time_update_wait_s") - waited_before >= 0.1   # the rule waited, and it is counted
    assert rt.counters.get("steps_timed") >= 1 and rt.counters.get("time_step_s") > 0


def test_a_group_released_between_plan_and_sample_loses_its_slot():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1), req("b", {"beta": 0.5}, "q", 1)]
    batch = Batch(reqs)
    planned = step.plan(rt, batch.forward, batch.schedule)
    assert planned.planned_slots == [0, 1]
    step.leave(rt, rt.members.member_of(reqs[0]))           # e.g. aborted while the forward ran
    batch.write_taps(rt)
    assert step._taps_and_settle(rt, planned, batch.forward) is True
    assert planned.planned_slots == [-1, 1]                  # not trained, and no distiller term
    assert planned.terms.slots.tolist() == [-1, 1] and planned.terms.betas.tolist() == [0.0, 0.5]


# -- prefill rows that need ESamp's own sampler -------------------------------------------------------------------
def test_a_seeded_request_draws_its_first_token_with_the_esamp_rule_and_beta_zero():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1, seed=11)]
    planned, ids = one_step(rt, Batch(reqs, mode="EXTEND"), taps=False)
    assert planned.sample_only and planned.terms.betas.tolist() == [0.0] and planned.out is not None
    assert rt.counters.get("prefill_rows_sampled") == 1 and rt.core.occupancy == 0
    again, ids2 = one_step(make_runtime(), Batch([req("a2", {"beta": 0.5}, "p2", 1, seed=11)], mode="EXTEND"),
                           taps=False)
    assert torch.equal(ids, ids2)                           # reproducible from the first token


# -- 6. leave ----------------------------------------------------------------------------------------------------------
def test_leave_settles_the_last_step_and_frees_the_slot_with_the_last_member():
    rt = make_runtime(mode="async")
    reqs = [req("a", {"beta": 0.5}, "p", 2), req("b", {"beta": 0.5}, "p", 2)]
    one_step(rt, Batch(reqs))
    a, b = (rt.members.member_of(r) for r in reqs)
    step.leave(rt, a)
    assert a.rows == 1 and rt.members.report(a)["steps"] == 1 and rt.core.occupancy == 1
    step.leave(rt, b)
    assert rt.core.occupancy == 0 and rt.table.groups == {}
    assert rt.members.report(b)["slot"] == 0 and rt.members.report(b)["rows"] == 1


def test_a_member_without_sharpening_gets_its_divisor_and_the_others_none():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.8, "sharpen": False}, "p", 2), req("b", {"beta": 0.8, "sharpen": False}, "p", 2)]
    planned, ids = one_step(rt, Batch(reqs, top_k=8))
    assert planned.terms.divisor.tolist() == pytest.approx([1.8, 1.8]) and ids.shape == (2,)
    assert planned.out.reweighted.all()
    plain = step.plan(rt, Batch([req("c", {"beta": 0.8}, "q", 1)]).forward,
                      types.SimpleNamespace(reqs=[req("c", {"beta": 0.8}, "q", 1)]))
    assert plain.terms.divisor is None
