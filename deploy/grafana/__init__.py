"""The Grafana dashboard generator: ``python -m deploy.grafana.dashboard``."""
