"""Thin faust agents: they move messages between topics and call plain functions."""
