"""The product: scoring with a checkpoint (scoring.py), the catalog index (index.py) and the live catalog
(catalog.py), the first stage (first_stage.py, milvus_store.py), requests and their limits (requests.py), the
ranking and the score shown (ranking.py), search (search.py), and the web app (web.py routes, pages.py with
templates/ and static/).

Serving depends on the model library (wsense.models) only; it never imports training or evaluation.
"""
