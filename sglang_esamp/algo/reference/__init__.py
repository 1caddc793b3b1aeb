"""The reference: tap specs, HF-transformers taps and the reference decoder (the truth the server is checked against)."""
