"""Configuration: Postee's cfg.yaml and Herald's ``herald:`` section, typed and checked.

``loader`` reads a cfg.yaml into a ``Config`` (routes, templates, rules, actions checked by the
action registry's models, passed in by ``actions.load_config``); ``model`` holds the pydantic
helpers every config model uses, ``settings`` the ``herald:`` section, ``kafka`` its Kafka client
block, ``templateurl`` the rule for template URLs. Nothing here imports another room of ``app``."""
