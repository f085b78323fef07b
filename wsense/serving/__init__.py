"""The product: scoring with a checkpoint, the catalog index, the first stage, search, the web app.

Serving depends on the model library (wsense.models) only; it never imports training or evaluation.
"""
