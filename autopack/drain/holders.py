"""Who holds a session or a claim, and whether that process is provably gone.

A holder is written as `host:pid:machine:start` — the hostname for people, the pid, this
machine's id and the process's start time (kernel ticks since boot) for the liveness check.
The hostname is never used to decide: containers share it. A holder is *dead* only when it is
on this machine (same machine id) and its pid is absent or now belongs to a process that
started at another time (a reused pid). Holders elsewhere, or written by an older autopack
(`host:pid`), are never declared dead here: their leases expire instead.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def machine_id() -> str:
    """This machine's id (`/etc/machine-id`, else the boot id); "" when neither is readable."""
    for path in (*_MACHINE_ID_FILES, _BOOT_ID_FILE):
        try:
            text = path.read_text(encoding="ascii").strip().replace("-", "")
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            return text[:32]
    return ""


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat);
    None when the process does not exist or /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    machine: str = ""
    started: str = ""

    def text(self) -> str:
        return f"{self.host}:{self.pid}:{self.machine}:{self.started}"

    def is_local(self) -> bool:
        return bool(self.machine) and self.machine == machine_id()

    def is_dead(self) -> bool:
        """Provably gone: on this machine, and its pid is absent or was reused since."""
        if not self.is_local():
            return False
        if process_start(self.pid) is not None:
            return process_start(self.pid) != self.started
        if Path("/proc/self/stat").exists():
            return True  # /proc works and the pid is not in it
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def this_process() -> Holder:
    pid = os.getpid()
    return Holder(socket.gethostname(), pid, machine_id(), process_start(pid) or "")


def parse_holder(text: str | None) -> Holder | None:
    """The holder a session's worker or a claim's token names (a claim token adds
    `:session:n`); None when it names none."""
    parts = str(text or "").split(":")
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    if len(parts) >= 4:
        return Holder(parts[0], int(parts[1]), parts[2], parts[3])
    return Holder(parts[0], int(parts[1]))


def holder_label(text: str | None) -> str:
    """`host:pid` for people (the machine id and start time are for the check)."""
    holder = parse_holder(text)
    return f"{holder.host}:{holder.pid}" if holder else str(text or "?")
