"""
guard.py -- what stands between a script and a lost take: outputs checked before the work,
one process per output folder, and the failures a user can fix said in one line.

    with guard.one_line_errors():                  # a full disk: one line, not a traceback
        out = guard.output_folder(args.out, need_bytes=50e6)   # writable, space, not a file
        with guard.FolderLock(out, "generate.py"):  # a second generate.py into it refuses
            with guard.staged(out) as stage:        # the work's files, moved in when all done
                ...

The three failures below come from the machine, not from the code: a full disk, a
folder the user may not write, memory that runs out. Each becomes one line naming the
file (or the setting) and the fix. Every other exception is a bug, and keeps its
traceback. Files written through data.atomic_write are whole or absent, so a failure
here loses nothing already done.
"""
import errno
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl  # POSIX; on Windows the lock is skipped (the scripts still run)
except ImportError:  # pragma: no cover
    fcntl = None

MB = 1e6


def quiet_ctrl_c(name):
    """In a script run as __main__: a Ctrl-C while its imports load (torch takes seconds)
    ends it in one line with exit code 130, not a traceback from inside torch. Nothing has
    been done yet, so nothing is lost. The script calls loaded() once they are in."""
    if name == "__main__":
        signal.signal(signal.SIGINT, _stop_while_loading)


def _stop_while_loading(signum, frame):
    print("\nstopped by Ctrl-C while loading: nothing was done", file=sys.stderr)
    os._exit(130)


def loaded():
    """Ctrl-C as Python has it again (KeyboardInterrupt), for the scripts' own handling."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def nearest_existing(path):
    """The path itself or its nearest ancestor that exists: where a new file would land."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def output_folder(out, need_bytes=0, flag="--out"):
    """--out as a folder the work can be written to, checked before any work: not an
    existing file, writable (a probe file is created and removed), and with `need_bytes`
    free. Returns Path(out); creates nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"{flag} {out} is a file: give a folder (it is created if missing)")
    home = nearest_existing(out)
    if not home.is_dir():
        raise SystemExit(f"{flag} {out}: {home} is a file, so no folder can be made there: "
                         "choose another path")
    probe = home / f".write_probe{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as err:
        raise SystemExit(f"{flag} {out}: cannot write in {home} ({err.strerror}): choose a "
                         "folder you can write to") from None
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(home).free
    if free < need_bytes:
        raise SystemExit(f"{flag} {out}: {home} has {free / MB:.0f} MB free, and this will "
                         f"write about {need_bytes / MB:.0f} MB: free some space or choose "
                         "another folder")
    return out


@contextmanager
def staged(out):
    """A hidden folder inside out (created if missing) for a set of files, moved into out
    once all are written: renames, which take no space and cannot half-happen. The folder
    is removed whatever happens, so a failure leaves out as it was."""
    out = Path(out)
    stage = out / f".stage.tmp{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
        for path in sorted(stage.rglob("*")):
            target = out / path.relative_to(stage)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


class FolderLock:
    """One process at a time in a folder: a lock file beside it (.<name>.lock), held with
    flock, which the kernel releases when the process ends, even by kill -9. A second
    process refuses in one line naming the first's pid."""

    def __init__(self, folder, script):
        self.folder, self.script = Path(folder), script
        self.path = self.folder.absolute().parent / f".{self.folder.name}.lock"
        self.fd = None

    def __enter__(self):
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SystemExit(f"{self.folder} is in use by another {self.script} (pid {pid}): "
                             "wait for it to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def out_of_memory(err):
    """Whether an exception is the allocator giving up (CPU or GPU)."""
    if isinstance(err, MemoryError):
        return True
    text = str(err)
    return type(err).__name__ == "OutOfMemoryError" or (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text
                                           or "out of memory" in text.lower()))


def disk_message(err):
    """One line for an OSError from a full disk or a folder one may not write, else None."""
    where = err.filename or "a file"
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (f"the disk is full: could not write {where}. Files already complete are "
                "kept; free some space (df -h) or choose another --out, and run again")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {where} ({err.strerror}): choose a folder you can write to "
                "(--out)")
    return None


@contextmanager
def one_line_errors(memory_fix="lower --batch-size (or the window, or the number of samples)"):
    """The script's boundary: a full disk, an unwritable folder or memory run out become one
    line and exit 1; anything else propagates untouched (a bug keeps its traceback)."""
    try:
        yield
    except OSError as err:
        line = disk_message(err)
        if line is None:
            raise
        print(line, file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as err:
        if not out_of_memory(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        print(f"out of memory ({first}): {memory_fix}", file=sys.stderr)
        raise SystemExit(1) from None
