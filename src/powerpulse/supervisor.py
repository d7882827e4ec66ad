"""`serve --processes N`: N API processes on one port, each accepting on a socket of its own.

Every process listens on the port with SO_REUSEPORT, and the kernel spreads new connections
across their sockets. With one listening socket shared by all processes, whichever process
woke first accepted every connection waiting: 20 keep-alive clients that connected together
all went to one process, which did the work of both while the other idled (BENCHMARKS.md).

Before the processes start, the supervisor binds the port once without SO_REUSEPORT. That
fails if anything listens there already, including another `serve --processes`, which would
otherwise join the same group of sockets and take a share of the connections.

The supervisor restarts a process that dies while serving. One that fails while starting
(a bad setting, an unreachable database) stops the whole command, as a single process would.
SIGTERM or Ctrl-C stops every process gracefully; a second signal kills them. A process
whose supervisor is gone (killed with SIGKILL, say) stops by itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("powerpulse.serve")

# The exit status of a process whose app did not start (uvicorn uses the same).
STARTUP_FAILURE = 3
# A process that dies this soon after it started is taken to have failed to start.
STARTUP_SECONDS = 10.0
# Pending connections each process's socket queues (uvicorn's default backlog).
BACKLOG = 2048
# How often the supervisor looks for a stopped process when nothing else wakes it.
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class ServeOptions:
    """What every API process needs to serve; plain values, so it crosses to the process."""

    host: str
    port: int
    log_level: str
    proxy_headers: bool
    keep_alive_seconds: int
    app: str = "powerpulse.cli:serving_app"  # an app factory, called in each process


def _addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, Any]]:
    """Every address `host` names (`localhost` may be both ::1 and 127.0.0.1), once each."""
    found: list[tuple[socket.AddressFamily, Any]] = []
    for family, _type, _proto, _name, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        if (family, address) not in found:
            found.append((family, address))
    return found


def _bound(
    family: socket.AddressFamily, address: Any, *, reuse_port: bool, alone: bool
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Connections of an earlier server that are still closing do not hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and not alone:
            # With an IPv4 address on the same port, the IPv6 socket must not claim it too.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def can_share_port() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def claim_port(host: str, port: int) -> int:
    """The port the processes will share (a free one for 0), checked to be unused.

    The check binds without SO_REUSEPORT, which fails where any socket listens already,
    with or without SO_REUSEPORT. Raises OSError (EADDRINUSE) then.
    """
    addresses = _addresses(host, port)
    probes: list[socket.socket] = []
    try:
        for family, address in addresses:
            if port == 0 and probes:  # the others on the port the first was given
                address = (address[0], probes[0].getsockname()[1], *address[2:])
            probes.append(_bound(family, address, reuse_port=False, alone=len(addresses) == 1))
        return int(probes[0].getsockname()[1])
    finally:
        for probe in probes:
            probe.close()


def shared_port_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on host:port that the other processes of this server listen on too."""
    addresses = _addresses(host, port)
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = _bound(family, address, reuse_port=True, alone=len(addresses) == 1)
            sockets.append(sock)
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def serve_process(options: ServeOptions, supervisor_pid: int) -> None:
    """One API process: its own socket on the shared port, and uvicorn serving the app."""
    import uvicorn

    from .cli import configure_logging

    configure_logging()
    sockets = shared_port_sockets(options.host, options.port)
    config = uvicorn.Config(
        options.app,
        factory=True,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        proxy_headers=options.proxy_headers,
        timeout_keep_alive=options.keep_alive_seconds,
    )
    server = uvicorn.Server(config)
    threading.Thread(
        target=_stop_with_supervisor, args=(server, supervisor_pid), daemon=True
    ).start()
    try:
        server.run(sockets=sockets)
    except Exception:
        if server.started:
            raise
        logger.exception("the API process could not start")
        sys.exit(STARTUP_FAILURE)
    if not server.started:  # the app's startup failed; uvicorn has said why
        sys.exit(STARTUP_FAILURE)


def _stop_with_supervisor(server: Any, supervisor_pid: int) -> None:
    """Stop serving, gracefully, once the supervisor is gone (killed, say): a process left
    behind would keep the port, and the next `serve` would find it taken."""
    while os.getppid() == supervisor_pid:
        time.sleep(POLL_SECONDS)
    logger.warning("the supervising process has gone; this API process stops")
    server.should_exit = True


class Supervisor:
    """Starts the API processes, replaces one that dies, and stops them all on a signal."""

    def __init__(self, options: ServeOptions, processes: int) -> None:
        self._options = options
        self._count = processes
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[tuple[Any, float]] = []  # (process, when it started)
        self._signals: list[int] = []

    def run(self) -> int:
        """Serve until a signal (0) or until a process fails to start (1)."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for _ in range(self._count):
                self._processes.append(self._start())
            status = self._watch()
            self._stop()
            return status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, _frame: Any) -> None:
        self._signals.append(sig)

    def _start(self) -> tuple[Any, float]:
        process = self._context.Process(
            target=serve_process, args=(self._options, os.getpid()), name="powerpulse-api"
        )
        process.start()
        return process, time.monotonic()

    def _watch(self) -> int:
        while not self._signals:
            multiprocessing.connection.wait(
                [process.sentinel for process, _ in self._processes], timeout=POLL_SECONDS
            )
            for index, (process, started) in enumerate(self._processes):
                if process.is_alive() or self._signals:
                    continue
                code = process.exitcode
                if code == STARTUP_FAILURE or time.monotonic() - started < STARTUP_SECONDS:
                    logger.error(
                        "API process %s stopped while starting (exit code %s); stopping",
                        process.pid,
                        code,
                    )
                    return 1
                logger.warning(
                    "API process %s stopped (exit code %s); starting another", process.pid, code
                )
                self._processes[index] = self._start()
        return 0

    def _stop(self) -> None:
        """SIGTERM to every process still running, then wait; a further signal kills them."""
        handled = len(self._signals)
        for process, _ in self._processes:
            if process.is_alive():
                process.terminate()
        for process, _ in self._processes:
            while process.is_alive():
                process.join(POLL_SECONDS)
                if len(self._signals) > handled:
                    for other, _ in self._processes:
                        if other.is_alive():
                            other.kill()
                    handled = len(self._signals)
