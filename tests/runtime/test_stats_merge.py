"""/esamp/stats totals over DP ranks: counts add up, maxima take the max, means stay per rank."""
from sglang_esamp.serve.http_routes import merge_stats


def test_totals_over_two_ranks():
    a = {"counters": {"updates": 3, "candidates_per_row_max": 7, "mean_loss": 10.0, "last_loss": 9.0,
                      "candidates_per_row_mean": 2.5, "bank_occupancy": 1}}
    b = {"counters": {"updates": 4, "candidates_per_row_max": 5, "mean_loss": 30.0, "last_loss": None,
                      "candidates_per_row_mean": 1.5, "bank_occupancy": 2}}
    assert merge_stats([a, b, None]) == {"updates": 7, "candidates_per_row_max": 7, "bank_occupancy": 3}
