from wsense.safety.query_check import check_queries, check_query  # noqa: F401
from wsense.safety.rules import QueryVerdict, check_rules, mentions_child, normalize  # noqa: F401
