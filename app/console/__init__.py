"""The web console (``herald console``): Herald's topics as pages for people.

A core room: it reads the events, decisions, action, deliveries and dead-letter topics
(``store``, with ``app.kafka`` clients and ``app.forensics`` for rows, dead letters and the
timeline report), tries routes with ``app.routing`` without side effects, and serves
server-rendered HTML plus one static script (``server``, ``pages``, ``static/``). Who may see and
change what is ``auth``: viewer and operator roles, session cookies, CSRF tokens.
"""
