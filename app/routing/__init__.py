"""Routing: the router (an event -> decisions and action messages), Rego filters and templates
on the embedded engine or an OPA server (``policy``), Postee's Go-rendered legacy templates
(``legacy``) and the dedup/aggregation state model (``state``). Plain code, no Kafka."""
