"""Grafana dashboard provisioning: a later issue."""
