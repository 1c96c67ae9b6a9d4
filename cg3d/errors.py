"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UsageError(Exception):
    """A wrong parameter, a missing input, or an unusable file, named in the message."""
