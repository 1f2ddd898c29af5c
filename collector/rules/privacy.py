"""Personal data out of alert text: the one place that minimises file paths.

docs/privacy.md promises no user names leave a school PC in alerts. Antivirus events name
the file a threat was found in, and on school PCs that path usually runs through a pupil's
or teacher's profile folder (``C:\\Users\\nguyen.van.a\\Downloads\\x.exe``). The folder name
is the person's account name; the rest of the path (``Downloads\\x.exe``) is what the SOC
needs. Everything the rules engine puts into an alert passes through here.
"""

from __future__ import annotations

import re
from typing import Final

USER_PLACEHOLDER: Final = "<user>"

# Profile folders that belong to no person: keeping them tells the SOC more, costs nothing.
_SHARED_PROFILES: Final = frozenset(
    {"public", "default", "default user", "all users", "defaultapppool", USER_PLACEHOLDER}
)
# C:\Users\<name>\…, C:/Users/<name>/…, C:\Documents and Settings\<name>\… (Windows XP).
# The name runs to the next separator; a path ending at the profile folder takes the rest
# of the line, which over-masks prose rather than leak a name with a space in it.
_WINDOWS_PROFILE = re.compile(
    r"(?P<prefix>\b[A-Za-z]:[\\/]+(?:Users|Documents and Settings)[\\/]+)"
    r"(?P<name>[^\\/:*?\"<>|\r\n]+?)(?=[\\/]|$)",
    re.IGNORECASE | re.MULTILINE,
)
# /home/<name>/…, /Users/<name>/… (macOS), /media/<name>/… (desktop automount); a Linux
# account name has no blanks, so it ends at a slash, a blank or a quote.
_POSIX_PROFILE = re.compile(r"(?P<prefix>(?<![\w.])/(?:home|Users|media)/)(?P<name>[^/\s\"'<>]+)")


def _mask(found: re.Match[str]) -> str:
    name = found.group("name")
    if name.strip().lower() in _SHARED_PROFILES:
        return found.group(0)
    return found.group("prefix") + USER_PLACEHOLDER


def minimise_paths(text: str) -> str:
    """``text`` with the account name of every user profile path replaced by ``<user>``.

    >>> minimise_paths(r"C:\\Users\\nguyen.van.a\\Downloads\\x.exe")
    'C:\\\\Users\\\\<user>\\\\Downloads\\\\x.exe'
    >>> minimise_paths("/home/alice/Downloads/x.sh")
    '/home/<user>/Downloads/x.sh'
    """
    if "/" not in text and "\\" not in text:
        return text  # the common case on the hot path: no path at all
    return _POSIX_PROFILE.sub(_mask, _WINDOWS_PROFILE.sub(_mask, text))
