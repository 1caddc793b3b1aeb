"""The sampling rule: candidate filters, the novelty reweighting, seeded noise, vocab shards, the replayed step."""
