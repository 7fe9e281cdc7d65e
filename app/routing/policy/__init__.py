"""Rego policy evaluation: engines, route filters and templates."""
