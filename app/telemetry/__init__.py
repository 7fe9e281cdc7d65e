"""Telemetry: Prometheus metrics (``metrics``) and the text/JSON log format with per-event
context (``logformat``), used by the bridge and the worker."""
