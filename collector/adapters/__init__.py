"""Adapters to outside systems; the only modules that import their client libraries."""
