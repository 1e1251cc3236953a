"""What ``/proc`` tells about a process, to tell a worker from a later process with its pid."""

from __future__ import annotations


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])
