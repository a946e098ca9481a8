"""Grafana dashboards as code: built with grafana-foundation-sdk (``build.py`` and one module per
dashboard), committed as JSON in ``dashboards/json/``, provisioned over Grafana's HTTP API
(``provision.py``, through the adapter ``grafana_api.py``) or as provisioning files (``files.py``).
"""
