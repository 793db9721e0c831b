"""stdin/stdout <-> TCP relay, the ssh ``ProxyCommand`` that reaches sandbox nodes.

Run inside the sandbox's hub network namespace (``ip netns exec <hub> python -m
promenade.gates.relay HOST PORT``), so the host itself needs no route to the node network:
if the hub is gone, the relay cannot start and nothing is sent anywhere.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def relay(host: str, port: int) -> None:
    """Copy bytes both ways between stdio and ``host:port`` until either side closes."""
    conn = socket.create_connection((host, port), timeout=10)
    conn.settimeout(None)
    selector = selectors.DefaultSelector()
    stdin = sys.stdin.fileno()
    stdout = sys.stdout.fileno()
    selector.register(stdin, selectors.EVENT_READ)
    selector.register(conn, selectors.EVENT_READ)
    while True:  # ends when the node closes the connection
        for key, _ in selector.select():
            if key.fileobj == stdin:
                data = os.read(stdin, 65536)
                if data:
                    conn.sendall(data)
                else:
                    selector.unregister(stdin)
                    conn.shutdown(socket.SHUT_WR)
                continue
            data = conn.recv(65536)
            if not data:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(stdout, view):]


if __name__ == "__main__":
    relay(sys.argv[1], int(sys.argv[2]))
