"""Errors that reach the user as one clear line rather than a traceback."""


class UserError(Exception):
    """A problem with the user's input (bad folder, wrong checkpoint, failed gate)."""
