"""
sax/files.py -- files written whole or not at all (a temporary file, then a rename), and the
metrics file read back even when its last line was cut short.
"""
import json
import os
from pathlib import Path

# ----------------------------------------------------------------------------
# Atomic writes: a temporary file in the same folder, then a rename, which the
# file system does in one step. A crash leaves the old file or the new one, never half.
# ----------------------------------------------------------------------------

def atomic_write(path, write_fn, mode="wb"):
    """Write a file through write_fn(f), atomically. fsync before the rename: otherwise
    a power cut can leave the new name pointing at data the disk never received."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    # a failed or interrupted write leaves nothing behind, not even the temporary file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(out):
    """Temporary files left by a run that was killed mid-write (.name.tmp<pid>), unless the
    process that writes them is alive: another shard may be writing into this folder."""
    for stale in out.rglob(".*.tmp*"):
        pid = stale.name.rpartition(".tmp")[2]
        if pid.isdigit() and Path(f"/proc/{pid}").exists() and int(pid) != os.getpid():
            continue
        if stale.is_file():
            stale.unlink(missing_ok=True)


def write_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, ensure_ascii=False), mode="w")


def read_metrics(path):
    """metrics.jsonl -> its rows. A line cut short (a crash while it was written) is dropped:
    it is the only line a crash can damage, and the next run writes it again."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"{path}: dropped a damaged line "
                  f"({line[:40]!r}...), left by an interrupted write")
    return rows


def log_metrics(metrics_file, row):
    """Append one row to metrics.jsonl. JSON lines: one object per line, appended as
    training goes; any tool (pandas, jq, a spreadsheet) reads it, and a crash loses at
    most the line being written."""
    with open(metrics_file, "a") as f:
        f.write(json.dumps(row) + "\n")
