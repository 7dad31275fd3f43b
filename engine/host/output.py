"""Writing result files without ever clobbering one: every command's outputs go through here.

An output is checked before any work starts (`check_output`), written to a temporary
file in its own folder and renamed into place (`write_atomically`), and a long run holds
a lock next to it (`reserve`) so that a second run to the same path stops at once
instead of computing for minutes and then failing.
"""

import contextlib
import os
import signal
import socket
import stat
import tempfile
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class OutputError(ValueError):
    """An output path that must not be written (an input, not a regular file, locked, ...)."""


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return a.resolve() == b.resolve()


def replaceable_target(path: Path) -> Path:
    """The file a forced write replaces: `path`, or its symlink's target when that is a regular
    file inside the output folder. Anything else (device, FIFO, directory, a link out of the
    folder) is refused: replacing it would destroy something that is not a result file."""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        target = path.resolve()
        folder = path.parent.resolve()
        if folder not in target.parents:
            raise OutputError(f"{path}: is a symlink to {target}, outside the output folder; refusing to replace it")
        if not target.is_file():
            raise OutputError(f"{path}: is a symlink to {target}, which is not a regular file")
        return target
    if not stat.S_ISREG(mode):
        raise OutputError(f"{path}: is {_kind(mode)}, not a regular file; refusing to replace it")
    return path


def check_output(path, *, force: bool, inputs: dict | None = None) -> Path:
    """Refuse, before any work, an output that cannot or must not be written.

    `inputs` maps paths the command reads (its study file, its results files) to what
    they are: none of them is ever an output, even with --force.
    """
    path = Path(path)
    for source, what in (inputs or {}).items():
        if _same_file(path, Path(source)):
            raise OutputError(f"{path}: is {what}, which is read, never written; choose another output")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"{path}: directory {path.parent} is not writable")
    if os.path.lexists(path):
        if path.is_dir():
            raise OutputError(f"{path}: is a directory")
        if not force:
            raise OutputError(f"{path}: exists; pass --force to overwrite it")
        replaceable_target(path)
    return path


def _new_file_mode() -> int:
    """0o666 less the umask: what open() would give a new file (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path, write, *, force: bool = False) -> Path:
    """Call `write(temporary_path)`, then rename the temporary file onto `path`.

    An existing `path` is replaced only with `force`, only if it is a regular file (or a
    link to one in the same folder, whose target is replaced), and keeps its mode; a new
    file gets the user's umask. A failed write leaves `path` as it was.
    """
    path = Path(path)
    target = path
    if os.path.lexists(path):
        if not force:
            raise FileExistsError(f"{path} exists; pass force=True (--force) to overwrite it")
        target = replaceable_target(path)
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else _new_file_mode()
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX, dir=target.parent)
    except OSError as error:
        raise OutputError(f"{path}: cannot write in {target.parent}: {error.strerror}") from None
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except OSError as error:
        raise OutputError(f"{path}: could not be written: {error}") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def leftover_temporaries(path) -> list[Path]:
    """Temporary files of `path` left by a save that was killed (SIGKILL, power loss)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{TEMPORARY_SUFFIX}"))


def _holder(lock: Path) -> tuple[str, int]:
    """(host, pid) written in a lock file; ('', 0) when it cannot be read."""
    try:
        host, _, pid = lock.read_text().partition(" ")
        return host, int(pid)
    except (OSError, ValueError):
        return "", 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def reserve(path):
    """Hold `<path>.lock` while a run computes what it will write to `path`.

    The lock is created exclusively (O_EXCL), so a second run to the same output fails
    at its start. A lock left by a dead process on this host (SIGKILL) is taken over.
    """
    lock = Path(f"{path}{LOCK_SUFFIX}")
    created = False
    try:
        for _ in range(2):
            try:
                # Ctrl-C / SIGTERM held while the lock is created, so a stop cannot fall between its
                # creation and `created`: the `finally` below then always removes it.
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                try:
                    handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    created = True
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                break
            except FileExistsError:
                host, pid = _holder(lock)
                if host == socket.gethostname() and pid and not _alive(pid):
                    lock.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                holder = f"process {pid} on {host}" if pid else "another process"
                raise OutputError(
                    f"{path}: {holder} is already running to write it (lock {lock}); "
                    "wait for it, or delete the lock if that run is gone"
                ) from None
            except OSError as error:
                raise OutputError(f"{path}: cannot create the lock {lock}: {error.strerror}") from None
        else:
            raise OutputError(f"{path}: the lock {lock} keeps reappearing; is another run starting?")
        os.write(handle, f"{socket.gethostname()} {os.getpid()}".encode())
        os.close(handle)
        yield lock
    finally:
        if created:
            lock.unlink(missing_ok=True)
