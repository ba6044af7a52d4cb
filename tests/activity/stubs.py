"""Stand-ins for the host's GPU tool and login records, for tests of the activity sources.

Nothing here reads the developer's GPU or sessions:

- :func:`write_nvidia_smi_stub` writes an executable ``nvidia-smi`` (a ``/bin/sh``
  script) that prints what the real one prints for
  ``--query-gpu=... --format=csv,noheader,nounits``: one line per GPU, values
  separated by ``", "``, ``[N/A]`` / ``[Not Supported]`` where the driver has no
  number. It reads what to print from files beside it on every call, so a test changes
  the GPU's utilisation while an agent runs with :func:`set_nvidia_smi`. Every call's
  arguments are appended to ``<stub>.calls``.
- :func:`write_utmp` packs glibc ``struct utmp`` records with :mod:`struct`, in the
  layout of x86_64 (384 bytes) or aarch64 (400 bytes), written out independently of the
  source's own reader.
"""

from __future__ import annotations

import os
import platform
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

NA = "[N/A]"
NOT_SUPPORTED = "[Not Supported]"

Cell = Union[int, float, str, None]
Row = Sequence[Cell]

EXPECTED_FORMAT = "--format=csv,noheader,nounits"


def gpu_row(index: int = 0, *, utilization: Cell = 0, name: str = "NVIDIA H100 80GB HBM3",
            memory_used: Cell = 0, memory_total: Cell = 81559, temperature: Cell = 31,
            ecc: Cell = 0) -> tuple[Cell, ...]:
    """One GPU's row, in the order of ``soong_plugins.activity.gpu.FIELDS``."""
    return (index, name, utilization, memory_used, memory_total, temperature, ecc)


def format_rows(rows: Iterable[Row]) -> str:
    """nvidia-smi's CSV: ``None`` prints as ``[N/A]``, a string verbatim."""
    lines = [", ".join(NA if cell is None else str(cell) for cell in row) for row in rows]
    return "".join(line + "\n" for line in lines)


def _files(stub: Path) -> dict[str, Path]:
    return {what: stub.with_name(f"{stub.name}.{what}")
            for what in ("out", "err", "rc", "hang", "calls")}


def _replace(path: Path, text: str) -> None:
    """Write ``text`` so that a stub running at that moment sees the old or the new."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def set_nvidia_smi(stub: Path, rows: Iterable[Row] | str | None = None, *,
                   exit_code: int | None = None, stderr: str | None = None,
                   hang: bool | None = None) -> None:
    """Change what the stub prints next time: ``rows`` (or a raw string of output), its
    exit status, what it writes to stderr, or ``hang`` (sleep for an hour first, in a
    child process of the script, as a wedged driver call would; the child's pid is then
    written into ``<stub>.hang``, see :func:`hung_child`)."""
    files = _files(Path(stub))
    if rows is not None:
        _replace(files["out"], rows if isinstance(rows, str) else format_rows(rows))
    if exit_code is not None:
        _replace(files["rc"], f"{exit_code}\n")
    if stderr is not None:
        _replace(files["err"], stderr)
    if hang is not None:
        if hang:
            files["hang"].write_text("")
        else:
            files["hang"].unlink(missing_ok=True)


def write_nvidia_smi_stub(path: Path | str, rows: Iterable[Row] | str = (), *,
                          exit_code: int = 0, stderr: str = "", hang: bool = False) -> Path:
    """Write an executable ``nvidia-smi`` stub at ``path`` and what it prints; return it.

    It refuses (status 2, like nvidia-smi's own usage errors) any call without
    ``--query-gpu=`` and ``--format=csv,noheader,nounits``, so a source that asks
    another question sees a failure rather than a silent answer.
    """
    stub = Path(path)
    stub.parent.mkdir(parents=True, exist_ok=True)
    files = {what: shlex.quote(str(file)) for what, file in _files(stub).items()}
    script = f"""#!/bin/sh
# nvidia-smi stand-in written by tests/activity/stubs.py
printf '%s\\n' "$*" >> {files['calls']}
query=no
format=no
for argument in "$@"; do
    case "$argument" in
        --query-gpu=?*) query=yes ;;
        {EXPECTED_FORMAT}) format=yes ;;
    esac
done
if [ "$query" != yes ] || [ "$format" != yes ]; then
    echo "stub nvidia-smi: expected --query-gpu=... {EXPECTED_FORMAT}, got: $*" >&2
    exit 2
fi
if [ -e {files['hang']} ]; then
    sleep 3600 &
    echo "$!" > {files['hang']}
    wait
fi
[ -f {files['err']} ] && cat {files['err']} >&2
[ -f {files['out']} ] && cat {files['out']}
exit "$(cat {files['rc']} 2>/dev/null || echo 0)"
"""
    stub.write_text(script)
    stub.chmod(0o755)
    for file in _files(stub).values():
        if file.name.endswith(".hang") or file.name.endswith(".calls"):
            file.unlink(missing_ok=True)
    set_nvidia_smi(stub, rows, exit_code=exit_code, stderr=stderr, hang=hang)
    return stub


def hung_child(stub: Path | str) -> int | None:
    """The pid of the ``sleep`` a hanging stub started last (None before one started)."""
    text = _files(Path(stub))["hang"].read_text().strip()
    return int(text) if text else None


def nvidia_smi_calls(stub: Path | str) -> list[list[str]]:
    """The argument lists the stub was called with, oldest first."""
    calls = _files(Path(stub))["calls"]
    if not calls.exists():
        return []
    return [line.split(" ") for line in calls.read_text().splitlines()]


# -- utmp -----------------------------------------------------------------------------

EMPTY, RUN_LVL, BOOT_TIME, NEW_TIME, OLD_TIME = 0, 1, 2, 3, 4
INIT_PROCESS, LOGIN_PROCESS, USER_PROCESS, DEAD_PROCESS = 5, 6, 7, 8

# glibc struct utmp, written field by field. Both layouts: ut_type (short) and 2 bytes
# of padding, ut_pid (int32), ut_line[32], ut_id[4], ut_user[32], ut_host[256], ut_exit
# (2 shorts), then at 336:
# - x86_64: ut_session int32, ut_tv 2 x int32, ut_addr_v6 4 x int32, 20 reserved: 384;
# - aarch64: ut_session long, ut_tv 2 x int64, ut_addr_v6, 20 reserved, 4 of tail
#   padding (the struct aligns to 8): 400.
_LAYOUTS = {
    384: struct.Struct("=h2xi32s4s32s256shhiii4i20s"),
    400: struct.Struct("=h2xi32s4s32s256shhqqq4i20s4x"),
}


@dataclass(frozen=True)
class UtmpRecord:
    user: str = ""
    line: str = ""
    host: str = ""
    pid: int = 0
    type: int = USER_PROCESS
    id: str = ""
    session: int = 0
    seconds: int = 1_700_000_000
    address: tuple[int, int, int, int] = (0, 0, 0, 0)


def utmp_size(machine: str | None = None) -> int:
    name = (machine or platform.machine()).lower()
    return 400 if name in ("aarch64", "arm64") else 384


def pack_utmp(record: UtmpRecord, machine: str | None = None) -> bytes:
    layout = _LAYOUTS[utmp_size(machine)]
    return layout.pack(
        record.type, record.pid, record.line.encode(), record.id.encode(),
        record.user.encode(), record.host.encode(), 0, 0, record.session, record.seconds, 0,
        *record.address, b"")


def write_utmp(path: Path | str, records: Iterable[UtmpRecord], *,
               machine: str | None = None) -> Path:
    """Write ``records`` as a utmp file at ``path`` (replacing it at once); return it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_bytes(b"".join(pack_utmp(record, machine) for record in records))
    os.replace(temporary, target)
    return target


def session(user: str = "root", line: str = "pts/3", host: str = "10.0.0.2", *,
            pid: int | None = None) -> UtmpRecord:
    """An interactive login whose process lives (this test process, by default)."""
    return UtmpRecord(user=user, line=line, host=host, pid=os.getpid() if pid is None else pid,
                      id=line[-4:])


def port_forward(user: str = "ubuntu", host: str = "10.0.0.9", *,
                 pid: int | None = None) -> UtmpRecord:
    """What sshd leaves for a connection without a pseudo-terminal, when it leaves one."""
    return UtmpRecord(user=user, line="ssh:notty", host=host,
                      pid=os.getpid() if pid is None else pid)
