"""The worker's stages: consumer-group loops on confluent-kafka that move messages and call plain functions."""
