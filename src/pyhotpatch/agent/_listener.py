"""The service's listening socket: bound by the agent, or taken back from running workers.

A restarted agent must hand new workers the very socket the adopted workers accept on.
A second ``SO_REUSEPORT`` socket beside it would make the kernel split new connections
between the two, and when the last old worker closes the first one, the connections
queued on it are reset (unless ``net.ipv4.tcp_migrate_req`` is set). Linux 5.6's
``pidfd_getfd`` copies a descriptor out of a process the agent may trace: any process
when the agent runs as root, one of its own user's where Yama allows it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import socket
from collections.abc import Iterable

from pyhotpatch.agent._proc import start_time
from pyhotpatch.errors import AgentError

log = logging.getLogger("pyhotpatch.agent.supervisor")

#: the fd the listening socket has in every worker (systemd's SD_LISTEN_FDS_START)
LISTEN_FD = 3
#: ``pidfd_getfd``'s number, the same on every Linux architecture but Alpha
_PIDFD_GETFD = 438


def bind(host: str, port: int) -> socket.socket:
    """A new listening socket on ``host:port``, shareable with workers bound before."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise AgentError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise AgentError(f"cannot listen on {host}:{port}: {exc}") from exc
    return _off_listen_fd(sock)


def take_back(workers: Iterable[tuple[int, int]], host: str, port: int) -> socket.socket | None:
    """A copy of the socket on ``host:port`` that one of ``workers`` listens on, if one can be had.

    ``workers`` are ``(pid, start_time)`` pairs, so a process that reused a pid is
    left alone. None when no worker holds such a socket any more or the system does
    not let the agent copy it; the reason is logged.
    """
    if not hasattr(os, "pidfd_open") or platform.machine().startswith("alpha"):
        log.warning("this system cannot copy the workers' listening socket (no pidfd_getfd)")
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        wanted: set[tuple[object, ...]] = {tuple(info[4][:2]) for info in infos}
    except OSError as exc:
        log.warning("cannot resolve %s:%d to find the workers' socket: %s", host, port, exc)
        return None
    why = "no adopted worker listens on it any more"
    for pid, began in workers:
        try:
            found = _copy_from(pid, began, wanted)
        except OSError as exc:
            why = f"worker {pid}: {exc.strerror or exc}"
            continue
        if found is not None:
            log.info("serving new workers the socket worker %d listens on", pid)
            return _off_listen_fd(found)
    log.warning(
        "cannot take the listening socket back from the adopted workers (%s); a new one is "
        "bound beside it, and connections queued on the old one when its last worker stops "
        "are reset unless net.ipv4.tcp_migrate_req is 1",
        why,
    )
    return None


def _off_listen_fd(sock: socket.socket) -> socket.socket:
    """``sock``, moved off fd 3: ``posix_spawn``'s dup2 onto itself would keep it close-on-exec."""
    if sock.fileno() != LISTEN_FD:
        return sock
    moved = sock.dup()
    sock.close()
    return moved


def _copy_from(pid: int, began: int, wanted: set[tuple[object, ...]]) -> socket.socket | None:
    """A copy of ``pid``'s listening TCP socket bound to one of ``wanted``, if it has one."""
    pidfd = os.pidfd_open(pid)
    try:
        if start_time(pid) != began:
            return None
        for fd in sorted(int(name) for name in os.listdir(f"/proc/{pid}/fd")):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    continue
                copied = _getfd(pidfd, fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EBADF):
                    continue  # closed meanwhile
                raise
            try:
                sock = socket.socket(fileno=copied)
            except OSError:  # a kind of socket Python cannot wrap: not ours
                os.close(copied)
                continue
            if _listens_on(sock, wanted):
                return sock
            sock.close()
        return None
    finally:
        os.close(pidfd)


def _listens_on(sock: socket.socket, wanted: set[tuple[object, ...]]) -> bool:
    try:
        return (
            sock.type == socket.SOCK_STREAM
            and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            and tuple(sock.getsockname()[:2]) in wanted
        )
    except OSError:
        return False


def _getfd(pidfd: int, fd: int) -> int:
    """``pidfd_getfd(pidfd, fd, 0)``: a close-on-exec copy of another process's ``fd``."""
    libc = ctypes.CDLL(None, use_errno=True)
    # syscall() is variadic and reads every argument as a long
    arguments = (ctypes.c_long(n) for n in (_PIDFD_GETFD, pidfd, fd, 0))
    copied = int(libc.syscall(*arguments))
    if copied < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return copied
