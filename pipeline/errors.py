"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Library code raises `UserError` for anything the user can fix (a missing file, a bad
label, a params typo): the message names the file or key and says what to do. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
