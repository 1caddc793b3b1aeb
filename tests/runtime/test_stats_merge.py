"""/esamp/stats totals over DP ranks: each counter combines as it was declared (algo.counters), never by name."""
from sglang_esamp.algo.counters import ESampCounters
from sglang_esamp.wire.stats import merge_counters


def test_totals_over_two_ranks_follow_the_declarations():
    ranks = []
    for updates, cmax, occupancy, loss in ((3, 7, 1, 9.0), (4, 5, 2, None)):
        c = ESampCounters(bank_slots=4)
        c.add("updates", updates)
        c.raise_to("candidates_per_row_max", cmax)
        c.set("bank_occupancy", occupancy)
        c.set("last_loss", loss)
        c.add("loss_sum", 10.0 * updates)
        c.add("finite_losses", updates)
        ranks.append({"counters": c.snapshot(), "combine": c.combine()})
    total = merge_counters([*ranks, None])
    assert total["updates"] == 7 and total["candidates_per_row_max"] == 7 and total["bank_occupancy"] == 3
    assert total["bank_slots"] == 8 and total["loss_sum"] == 70.0
    assert "mean_loss" not in total and "last_loss" not in total      # per-rank values have no total
    assert ranks[0]["counters"]["mean_loss"] == 10.0


def test_every_counter_declares_how_it_combines():
    c = ESampCounters(bank_slots=1)
    assert set(c.combine()) == set(c.snapshot())
    assert c.combine()["candidates_per_row_mean"] == "per_rank" and c.combine()["updates"] == "sum"
