"""Forensics: Herald's own log on Kafka read back (``heraldlog``), entity timelines
(``timeline``, ``entities``, ``eventtime``, ``extsort``, ``report_html``), replay of recorded
events through a config (``replay``) and the dead-letter tools (``dlq``)."""
