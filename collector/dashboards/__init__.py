"""Grafana dashboards generated from code: the catalog, JSON rendering, files and push."""
