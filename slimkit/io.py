"""File helpers: outputs appear whole or not at all, and are never silently overwritten."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from slimkit.errors import SlimkitError


def check_output(path: str | Path, force: bool = False) -> Path:
    """Refuse to overwrite an existing output unless ``force`` is set.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()  # exists already
        >>> check_output(Path(folder) / "new.json").name, check_output(folder, force=True).is_dir()
        ('new.json', True)
    """
    path = Path(path)
    if path.exists() and not force:
        raise SlimkitError(f"{path} already exists; pass --force to overwrite it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; move it into place only if the block succeeds.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
