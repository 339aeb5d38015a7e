"""Path strings as ``pathlib`` spells them, without importing ``pathlib``.

``pathlib`` costs a plugin process several milliseconds at start (it imports ``fnmatch``,
``urllib.parse``, ``ntpath``... and builds its classes); the few places on a plugin's path
that joined paths with it only need the string it produces, which names files and appears
in messages. :func:`join_path` gives that exact string.
"""


def join_path(*parts: str) -> str:
    """``str(PurePosixPath(*parts))``: parts joined by ``/``; a part starting with ``/``
    restarts the path; empty and ``.`` components dropped, repeated slashes collapsed (two
    leading slashes are kept, as POSIX allows them a meaning; three or more become one); no
    trailing slash; ``.`` for nothing. ``..`` stays (it is not resolved).
    """
    root = ""
    names: list[str] = []
    for part in parts:
        if part.startswith("/"):
            rest = part.lstrip("/")
            root = "//" if len(part) - len(rest) == 2 else "/"
            names = []
            part = rest  # noqa: PLW2901 - the part without its root
        names.extend(name for name in part.split("/") if name and name != ".")
    return root + "/".join(names) or "."
