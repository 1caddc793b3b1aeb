"""The distiller: its shape and init, the bank of per-slot distillers, bank sizing, warm starts."""
