"""A TCP relay to a real server that starts listening only when told: a service that is down, then back.

Before ``open()`` its port refuses connections (nothing listens there); afterwards every
connection is relayed, byte for byte, to the target. Used to bring PostgreSQL "back" in
the middle of a cold start without stopping the shared test server.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import attrs

__all__ = ["LateRelay"]


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@attrs.define
class LateRelay:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target_port`` once ``open`` is called."""

    target_port: int
    port: int = attrs.field(init=False)
    _listener: socket.socket | None = attrs.field(default=None, init=False)
    _sockets: list[socket.socket] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        # A port that was free a moment ago; nothing listens on it until ``open``.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def open(self) -> None:
        """Start listening and relaying."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()

    def open_after(self, seconds: float) -> threading.Timer:
        """``open`` in ``seconds``, from another thread."""
        timer = threading.Timer(seconds, self.open)
        timer.daemon = True
        timer.start()
        return timer

    def _accept(self) -> None:
        assert self._listener is not None
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                self._sockets += [client, upstream]
                threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        if self._listener is not None:
            self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
