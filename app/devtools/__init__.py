"""Development tools: generators of the committed docs and schemas (``python -m
app.devtools.docs_gen``, ``python -m app.devtools.schema_gen``). Like the CLI they sit above every
other room (they read the action registry); nothing at runtime imports them."""
