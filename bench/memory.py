"""Resident memory of a process and of its descendants (e.g. a parsing pool), read from /proc."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Memory:
    rss_kib: int  # now, summed over the process tree
    peak_kib: int  # VmHWM summed over the tree: an upper bound of the tree's peak
    own_peak_kib: int  # VmHWM of the process itself
    processes: int
    peaks_kib: tuple[int, ...]  # VmHWM of each process, the process itself first
    pids: tuple[int, ...] = ()  # in the same order
    rss_each_kib: tuple[int, ...] = ()  # VmRSS of each process, in the same order


def status_kib(pid: int) -> dict[str, int]:
    found = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone meanwhile
        return found
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree(pid: int | None = None) -> Memory:
    pid = os.getpid() if pid is None else pid
    own = status_kib(pid)
    found = [(p, status_kib(p)) for p in descendants(pid)]
    found = [(p, o) for p, o in found if o]
    others = [o for _p, o in found]
    return Memory(
        rss_kib=own.get("VmRSS", 0) + sum(o.get("VmRSS", 0) for o in others),
        peak_kib=own.get("VmHWM", 0) + sum(o.get("VmHWM", 0) for o in others),
        own_peak_kib=own.get("VmHWM", 0),
        processes=1 + len(others),
        peaks_kib=(own.get("VmHWM", 0), *(o.get("VmHWM", 0) for o in others)),
        pids=(pid, *(p for p, _o in found)),
        rss_each_kib=(own.get("VmRSS", 0), *(o.get("VmRSS", 0) for o in others)),
    )


def reset_peaks(pid: int | None = None) -> bool:
    """Set VmHWM to the current RSS in the whole tree (Linux ``clear_refs`` value 5)."""
    pid = os.getpid() if pid is None else pid
    done = True
    for each in [pid, *descendants(pid)]:
        try:
            Path(f"/proc/{each}/clear_refs").write_text("5")
        except OSError:
            done = False
    return done
