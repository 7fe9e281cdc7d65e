"""Ingest: the webhook bridge (``bridge``: Postee's endpoints -> the events topic), its
authentication (``auth``: bearer, HMAC, mTLS, the exposure rule) and the disk spool that holds
events while Kafka is down (``spool``)."""
