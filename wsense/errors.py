"""The one error type users see: a single line naming the file and what is wrong."""


class WsenseError(Exception):
    """A problem with the user's input or environment, reported as one clear line (no traceback)."""
