// Package prometheus pins the Prometheus server that scripts/build-prometheus.sh builds for the
// tests (tests/test_prometheus_e2e.py): a real Prometheus scraping Herald's bridge and worker.
// Nothing here is part of Herald; the build uses the remove_all_sd tag (static targets only).
package prometheus
