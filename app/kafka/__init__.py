"""Kafka: the one librdkafka client configuration (``client``), topic names (``topics``) and
creation (``admin``), reading a time window of a topic (``window``), and the delivered-keys
store the worker keeps on a compacted topic (``delivered``)."""
