"""Alert rules (thresholds, windows, for-durations, hysteresis, stale devices): a later issue."""
