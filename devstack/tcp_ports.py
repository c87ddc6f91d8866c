"""Free TCP ports on loopback for local services that cannot bind port 0 themselves.

Prefer letting a server bind port 0 and report the port it got (the ARM endpoint and
Azurite both do): that has no race. This helper is for the few tools that need a concrete
port up front (aiosmtpd's Controller rejects port 0). Between this call and the tool's
bind another process could take the port; on a developer machine that is rare, and the
tool then fails loudly with "address in use" rather than misbehaving.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
