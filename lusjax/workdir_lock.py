"""One trainer per workdir: `<workdir>/trainer.lock`, held while a run trains.

Local (and NFS/Lustre, shared by the hosts of a job) workdirs: the lock is an
`fcntl.flock` on that file, which the kernel drops when the holder dies, however
it dies (SIGKILL, OOM). The file's JSON says who holds it (host, pid, start,
command) so that a refused second trainer can name the holder. A file left by a
dead holder is stale: the next trainer takes it over and says so. On a
filesystem without flock the JSON alone decides: a live pid on this host (the same
process: its start time matches) holds it, a lock from another host is respected
until removed by hand.

Object-store workdirs (gs://...) cannot be locked: a lock object is created if
absent and removed at the end, best effort. Two trainers started at the same
moment can both pass, and a lock left by a crash on another host must be deleted
by hand (the error message says which file).

Only process 0 of a multi-host run takes the lock (the workdir is shared).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from lusjax import files
from lusjax.errors import UserError
from lusjax.layout import TRAINER_LOCK


def _proc_start(pid: int) -> str | None:
    """The start time of `pid` (clock ticks since boot, /proc), to tell a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process named by `holder` still runs (on this host; can't tell otherwise)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    except (OSError, OverflowError, ValueError):
        return False
    start = holder.get("proc_start")
    return start is None or _proc_start(pid) in (None, start)


def _me() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "proc_start": _proc_start(os.getpid()),
        "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


def _describe(holder: dict) -> str:
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
        f"{holder.get('since', '?')}"
    )


def _refuse(workdir, lock, holder: dict):
    return UserError(
        f"{workdir} is in use by {_describe(holder)} ({holder.get('command', '')}); "
        f"wait for it or stop it (if it is gone, delete {lock})"
    )


def _parse(text: str) -> dict:
    try:
        holder = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def hold(workdir: str | os.PathLike, *, enabled: bool = True) -> Iterator[Path | None]:
    """Holds `<workdir>/trainer.lock` inside the block (creating the workdir); raises a
    UserError naming the holder if another live trainer has it. `enabled=False`: a no-op
    (processes other than 0)."""
    if not enabled:
        yield None
        return
    wd = files.makedirs(workdir)
    lock = wd / TRAINER_LOCK
    if not isinstance(lock, Path):
        yield from _hold_remote(workdir, lock)
        return
    fd = _lock_local(workdir, lock)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # before the flock goes: a waiting opener then sees a new file
        os.close(fd)


def _lock_local(workdir, lock: Path) -> int:
    import fcntl

    while True:
        with files.writing(lock):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flocked = True
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise _refuse(workdir, lock, _parse(_read(fd))) from None
                flocked = False  # no flock here: the file's content decides alone
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed it meanwhile: lock the new file
                os.close(fd)
                continue
            holder = _parse(_read(fd))
            if (
                holder
                and holder.get("pid") != os.getpid()
                and ((not flocked and _alive(holder)) or (flocked and _alive_here(holder)))
            ):
                raise _refuse(workdir, lock, holder)
            if holder:
                print(
                    f"lusjax: taking over {lock}: its holder ({_describe(holder)}) is no "
                    "longer running",
                    file=sys.stderr,
                    flush=True,
                )
            with files.writing(lock):
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(_me()) + "\n").encode(), 0)
            return fd
        except BaseException:
            os.close(fd)
            raise


def _alive_here(holder: dict) -> bool:
    # flock granted: its holder is dead, unless flock is a no-op on this filesystem and the
    # holder is a live process of this very host.
    return holder.get("host") == socket.gethostname() and _alive(holder)


def _read(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).decode(errors="replace")


def _hold_remote(workdir, lock) -> Iterator:
    with files.writing(lock):
        if lock.exists():
            holder = _parse(lock.read_text())
            if _alive(holder):
                raise _refuse(workdir, lock, holder)
            print(
                f"lusjax: taking over {lock}: its holder ({_describe(holder)}) is no longer "
                "running",
                file=sys.stderr,
                flush=True,
            )
        lock.write_text(json.dumps(_me()) + "\n")
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
