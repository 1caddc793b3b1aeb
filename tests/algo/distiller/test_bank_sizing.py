"""``--esamp-bank-slots auto``: the pure sizing rule (algo.distiller.bank_sizing) and how the config takes "auto" or a number."""
import json

import pytest
import torch

from sglang_esamp.algo.distiller.bank import bank_memory
from sglang_esamp.algo.distiller.bank_sizing import (AUTO, HARD_CAP, HARD_CAP_CPU, auto_bank_slots, explicit_bank_slots,
                                           memory_left_after_sglang)
from sglang_esamp.algo.config import ESampConfig, ESampParamError

MiB, GiB = 2**20, 2**30


def size(left=8 * GiB, per_slot=25 * MiB, headroom=0.5, running=2048, hard=HARD_CAP_CPU, ranks=1):
    return auto_bank_slots(per_slot_bytes=per_slot, left_bytes=left, headroom=headroom, running_cap=running,
                           hard_cap=hard, ranks=ranks)


def test_memory_decides_when_the_budget_is_smallest():
    s = size(left=1 * GiB, per_slot=25 * MiB, headroom=0.5, running=2048, hard=1024)
    assert s.budget_bytes == 512 * MiB and s.by_memory == 20
    assert (s.slots, s.decided_by) == (20, "memory")


def test_max_running_requests_decides_when_it_is_smallest():
    s = size(left=100 * GiB, running=7, hard=1024)
    assert (s.slots, s.decided_by) == (7, "max_running_requests")


def test_the_hard_cap_decides_on_a_big_machine():
    s = size(left=100 * GiB, running=2048, hard=HARD_CAP_CPU)
    assert (s.slots, s.decided_by) == (HARD_CAP_CPU, "hard_cap")
    s = size(left=10_000 * GiB, per_slot=25 * MiB, running=4096, hard=HARD_CAP)
    assert (s.slots, s.decided_by) == (HARD_CAP, "hard_cap")


def test_at_least_one_slot_and_ties_go_to_memory_first():
    s = size(left=10 * MiB, per_slot=25 * MiB)
    assert (s.slots, s.decided_by, s.by_memory) == (1, "memory", 0)
    s = size(left=2 * 7 * 25 * MiB, per_slot=25 * MiB, running=7)      # memory fits exactly 7 = the running cap
    assert (s.slots, s.decided_by) == (7, "memory")


def test_ranks_sharing_the_memory_split_the_budget():
    one, two = size(left=1 * GiB, hard=1024), size(left=1 * GiB, hard=1024, ranks=2)
    assert two.budget_bytes == one.budget_bytes // 2 and two.slots == one.slots // 2


def test_the_per_slot_figure_is_the_banks_peak_for_one_slot():
    shape = ESampConfig().distiller_shape(576)
    per = bank_memory(shape, 1, torch.float32, "adam")
    assert per.peak == per.per_slot + per.peak_extra_per_slot
    assert bank_memory(shape, 10, torch.float32, "adam").peak == 10 * per.peak   # linear: floor(budget/per) fits


@pytest.mark.parametrize("bad", [dict(per_slot=0), dict(running=0), dict(hard=0), dict(ranks=0), dict(headroom=0.0)])
def test_the_rule_rejects_nonsense_inputs(bad):
    with pytest.raises(ValueError):
        size(**bad)


def test_memory_left_after_sglangs_reservation():
    # uncapped pool (a GPU server): SGLang's pool takes all but its (1 - mem_fraction_static) reserve
    assert memory_left_after_sglang(60 * GiB, 80 * GiB, 0.875) == 10 * GiB
    # --max-total-tokens caps the pool (our CPU default): the rest of the free memory is left
    assert memory_left_after_sglang(8 * GiB, 9 * GiB, 0.9, kv_cap_bytes=1 * GiB) == 7 * GiB
    # a cap above what SGLang could give changes nothing; nothing free leaves nothing
    assert memory_left_after_sglang(60 * GiB, 80 * GiB, 0.875, kv_cap_bytes=500 * GiB) == 10 * GiB
    assert memory_left_after_sglang(0, 80 * GiB, 0.875) == 0


def test_explicit_sizing_and_the_one_line_description():
    e = explicit_bank_slots(10, 25 * MiB)
    assert (e.slots, e.decided_by, e.requested) == (10, "explicit", 10)
    assert "10 (explicit --esamp-bank-slots)" in e.describe() and "25.00 MiB per slot" in e.describe()
    line = size(left=100 * GiB, running=7, hard=1024).describe()
    assert line.startswith("7 (auto, decided by max_running_requests)") and "MiB per slot" in line
    assert "\n" not in line and json.loads(json.dumps(size().to_dict()))["slots"] == HARD_CAP_CPU


# -- the config ---------------------------------------------------------------------------------------------
def test_auto_is_the_default_and_a_number_wins():
    c = ESampConfig()
    assert c.bank_slots == AUTO and c.bank_slots_auto and c.session_max is None
    assert ESampConfig(bank_slots=10).bank_slots == 10 and ESampConfig(bank_slots=10).session_max == 4
    assert ESampConfig(bank_slots="10").bank_slots == 10          # the CLI's text
    assert ESampConfig(bank_slots=" Auto ").bank_slots == AUTO
    assert ESampConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c   # the handoff round trip


def test_resolving_auto_gives_an_int_config_and_session_max_follows():
    r = ESampConfig().with_bank_slots(3)
    assert (r.bank_slots, r.session_max) == (3, 3)
    assert ESampConfig().with_bank_slots(40).session_max == 4
    assert ESampConfig(session_max=0).with_bank_slots(3).session_max == 0
    with pytest.raises(ESampParamError, match="esamp.session_max must be at most the bank's slots, got 8 with "
                                              "bank_slots 3") as e:
        ESampConfig(session_max=8).with_bank_slots(3)
    assert "--esamp-session-max" in str(e.value)


@pytest.mark.parametrize("bad", [0, -1, "lots", "0", "", True, 2.5, None, 1 << 17])
def test_bad_bank_slots_name_the_field_and_what_is_allowed(bad):
    with pytest.raises(ESampParamError) as e:
        ESampConfig(bank_slots=bad)
    assert e.value.field == "esamp.bank_slots"
    assert "must be 'auto' or a number of slots in [1, 65536], got" in str(e.value)


def test_a_bank_cannot_be_built_from_an_unresolved_auto():
    from sglang_esamp.algo.core import ESampCore

    with pytest.raises(ValueError, match="with_bank_slots"):
        ESampCore(ESampConfig(width=8), 16, torch.randn(32, 16))
    assert ESampCore(ESampConfig(width=8).with_bank_slots(2), 16, torch.randn(32, 16)).bank.num_slots == 2


@pytest.mark.parametrize("value, ok", [("auto", AUTO), ("10", 10), ("lots", None), ("0", None), ("-1", None)])
def test_cli_flag_takes_auto_or_a_number_and_names_the_flag(value, ok, capsys):
    import argparse

    from sglang_esamp.serve.esamp_args import add_esamp_args, config_from_argv

    parser = argparse.ArgumentParser()
    add_esamp_args(parser)
    if ok is not None:
        assert config_from_argv(["--esamp-bank-slots", value], parser).bank_slots == ok
        return
    with pytest.raises(SystemExit):
        config_from_argv(["--esamp-bank-slots", value], parser)
    err = capsys.readouterr().err
    assert "--esamp-bank-slots" in err and "'auto' or a number of slots" in err


def test_cli_default_is_auto_and_help_says_so():
    import argparse

    from sglang_esamp.serve.esamp_args import add_esamp_args, config_from_argv

    parser = argparse.ArgumentParser()
    add_esamp_args(parser)
    assert config_from_argv([], parser).bank_slots == AUTO
    text = parser.format_help()
    assert "max_running_requests" in text and "(default: auto)" in text
