"""Refuse outbound network connections from inside the process (defence in depth).

With ``server.airgap`` on, an audit hook rejects ``socket.connect`` and ``getaddrinfo`` to any
host that is not loopback or a Unix socket, so a library that would quietly reach for a model hub
fails loudly instead. The hook cannot be removed once installed (audit hooks are permanent).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys

log = logging.getLogger(__name__)
_installed = False
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}
_permitted: set[str] = set()  # the operator's allow-listed hosts (names and their addresses)


class AirgapViolation(ConnectionError):
    pass


def is_local(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    text = str(host).strip("[]").lower()
    if text in _LOCAL_NAMES or text in _permitted:
        return True
    try:
        addr = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    return addr.is_loopback or addr.is_unspecified


def _hook(event: str, args: tuple) -> None:
    if event == "socket.connect":
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) == socket.AF_UNIX:
            return
        host = address[0] if isinstance(address, tuple) else address
        if not is_local(host):
            raise AirgapViolation(f"air-gapped: refused a connection to {host!r}")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if not is_local(host):
            raise AirgapViolation(f"air-gapped: refused to resolve {host!r}")


def permit(allow_hosts: str) -> None:
    """Let connections through to the hosts of ``[agents] http_allow_hosts`` (``name`` or
    ``name:port``, comma-separated): their names, and the addresses they resolve to now (before
    the guard is installed; a name that does not resolve is logged and stays refused)."""
    for entry in (e.strip().lower() for e in allow_hosts.split(",") if e.strip()):
        name = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        _permitted.add(name.strip("[]"))
        try:
            for info in socket.getaddrinfo(name, None):
                _permitted.add(str(info[4][0]).lower())
        except OSError as exc:
            log.warning("allow-listed host %s does not resolve: %s", name, exc)


def install() -> None:
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
        log.info("air-gap guard on: only loopback connections are allowed")
