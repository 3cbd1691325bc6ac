"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Library code raises `UserError` for anything the user can fix (a missing file, a bad
label, a params typo): the message names the file or key and says what to do. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


_FREE_SPACE = "free disk space and rerun (what was written before is intact; training resumes)"
_WRITABLE = "make the folder writable and rerun (what was written before is intact; training resumes)"
# OSError errnos that mean "this output cannot be written here", with the fix to print.
UNWRITABLE = {errno.ENOSPC: _FREE_SPACE, errno.EDQUOT: _FREE_SPACE, errno.EROFS: _WRITABLE,
              errno.EACCES: _WRITABLE, errno.EPERM: _WRITABLE}
