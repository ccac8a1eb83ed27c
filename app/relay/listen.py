"""Listening sockets for every relay protocol (bound in the parent, shared by workers)."""
from __future__ import annotations

import errno
import socket

from app.preflight import ConfigError


def bind(host: str, port: int) -> list[socket.socket]:
    out: list[socket.socket] = []
    for family, type_, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[:2]:
        sock = socket.socket(family, type_, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if out:  # port 0: every address family on the port the first one got
            addr = (addr[0], out[0].getsockname()[1], *addr[2:])
        sock.bind(addr)
        sock.listen(512)
        sock.setblocking(False)
        out.append(sock)
    return out


def listen(host: str, port: int, protocol: str, setting: str) -> list[socket.socket]:
    """`bind`, with a taken port reported as the configuration error it is, naming the
    setting that moves it."""
    try:
        return bind(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigError(f"the relay cannot listen for {protocol} on {host}:{port}: the port is already in use "
                          f"(another airlock, or another program). Stop it, or choose another port with "
                          f"{setting}=PORT (and AIRLOCK_BIND for the address).") from None
