"""Simulated park devices (microgrid, storage, 5G site, EV charger)."""
