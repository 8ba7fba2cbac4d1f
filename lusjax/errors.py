"""The one exception type for bad user input.

Raise `UserError("one clear sentence")` for anything a user can fix (missing
file, bad config key, unknown method, empty dataset). The CLI prints it as a
single line and exits with status 2; it never shows a traceback for it.
"""


class UserError(Exception):
    """Bad input that the user can fix; the message is shown as one line."""
