"""Errors that the commands report as a message and exit status 1.

Commands catch `ReportedError`, log its message (which names the bad value
and the fix) and exit with status 1. Other exceptions keep their traceback.
"""


class ReportedError(Exception):
    """An error whose message alone states what went wrong and how to fix it."""


class UserInputError(ReportedError, ValueError):
    """A setting, file or data set given by the user is invalid."""


class NonFiniteLossError(ReportedError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
