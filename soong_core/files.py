"""Private files written atomically: config, profiles, caches, the simulator's state.

Standard library only. A reader never sees half a file (temp file in the same
directory, fsync, rename), and what may hold a secret is created 0600 in a 0700
directory from the first byte, never chmod-ed afterwards. Callers turn ``OSError``
into their own one-line errors.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

FILE_MODE = 0o600
DIR_MODE = 0o700

_XDG = {
    "config": ("XDG_CONFIG_HOME", (".config",)),
    "data": ("XDG_DATA_HOME", (".local", "share")),
    "state": ("XDG_STATE_HOME", (".local", "state")),
    "cache": ("XDG_CACHE_HOME", (".cache",)),
}


def soong_dir(kind: str, environ: Mapping[str, str] | None = None) -> Path:
    """soong's folder of an XDG ``kind`` (config, data, state, cache): for example
    ``$XDG_DATA_HOME/soong``, ``~/.local/share/soong`` without it.

    Read at call time (tests and embedding programs change the environment). A
    relative or empty value is ignored, as the XDG specification says.
    """
    variable, fallback = _XDG[kind]
    env = os.environ if environ is None else environ
    base = env.get(variable, "").strip()
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), *fallback)
    return Path(base) / "soong"


def private_dir(directory: Path) -> None:
    """Create ``directory`` and each missing parent mode 0700 (what soong writes is
    private; a parent ``mkdir -p`` creates would be left to the umask).

    Directories that exist keep their mode: the user may have chosen it. Another
    process creating one at the same moment is no error.

    :raises NotADirectoryError: something else sits where it should be.
    :raises OSError: it cannot be created.
    """
    if directory.is_dir():
        return
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        if current.exists() or current.is_symlink():
            if current.is_dir():
                break  # another process made it between our two looks
            raise NotADirectoryError(f"{current} exists and is not a directory")
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if folder.is_dir():
                continue  # another process made it first
            raise NotADirectoryError(f"{folder} exists and is not a directory") from None
        folder.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, mode 0600; its directory is created
    0700 when missing. On any failure the old file is intact and no temp file is left."""
    private_dir(path.parent)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600, its folder 0700; the file
    stays) for the ``with`` block: what serialises a read-modify-write of a file that
    other soong processes change too. The kernel drops the lock if the process dies.
    Where there are no file locks (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
