from wsense.safety.rules import QueryVerdict, check_query, mentions_child, normalize  # noqa: F401
