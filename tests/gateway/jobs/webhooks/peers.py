"""Webhook receivers and an HTTP forward proxy on loopback, each in its own threads; a test
drives them with events, never with sleeps."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Peer:
    """What a receiver saw. ``release`` lets held requests go; ``arrived`` is set by the first
    request; ``hung_up`` when the gateway closed a connection before the answer was over."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    hung_up: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _serve(handler: type[BaseHTTPRequestHandler], peer: Peer) -> Iterator[Peer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    peer.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/asr"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        peer.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


class _Handler(BaseHTTPRequestHandler):
    peer: Peer

    def receive(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.peer.lock:
            self.peer.bodies.append(body)
            self.peer.in_flight += 1
            self.peer.most_in_flight = max(self.peer.most_in_flight, self.peer.in_flight)
        self.peer.arrived.set()

    def done(self) -> None:
        with self.peer.lock:
            self.peer.in_flight -= 1

    def log_message(self, *_args: Any) -> None:
        pass


@contextmanager
def held_receiver() -> Iterator[Peer]:
    """Answers nothing until ``release`` is set, then 200."""
    peer = Peer()

    class Handler(_Handler):
        def do_POST(self) -> None:
            self.receive()
            self.peer.release.wait()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.done()

    Handler.peer = peer
    yield from _serve(Handler, peer)


@contextmanager
def quick_receiver() -> Iterator[Peer]:
    """Answers 204 at once."""
    peer = Peer()

    class Handler(_Handler):
        def do_POST(self) -> None:
            self.receive()
            self.send_response(204)
            self.end_headers()
            self.done()

    Handler.peer = peer
    yield from _serve(Handler, peer)


@contextmanager
def dripping_receiver() -> Iterator[Peer]:
    """Starts its answer and then sends one more header byte every 50 ms, never finishing:
    no single read ever waits long."""
    peer = Peer()

    class Handler(_Handler):
        def do_POST(self) -> None:
            self.receive()
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                while not self.peer.release.wait(0.05):
                    self.wfile.write(b"a")
                    self.wfile.flush()
            except OSError:
                self.peer.hung_up.set()
            self.done()
            self.close_connection = True

    Handler.peer = peer
    yield from _serve(Handler, peer)


@contextmanager
def endless_body_receiver() -> Iterator[Peer]:
    """Answers 200 with a chunked body that never ends, written as fast as it is read."""
    peer = Peer()

    class Handler(_Handler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.receive()
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
            try:
                while not self.peer.release.is_set():
                    self.wfile.write(chunk)
            except OSError:
                self.peer.hung_up.set()
            self.done()
            self.close_connection = True

    Handler.peer = peer
    yield from _serve(Handler, peer)


@dataclass
class Proxy:
    url: str = ""
    requested: list[str] = field(default_factory=list)


@contextmanager
def forward_proxy() -> Iterator[Proxy]:
    """A plain-HTTP forward proxy: takes ``POST http://host:port/path``, sends it on with
    ``Connection: close`` and relays the answer; it records every absolute URL asked for."""
    proxy = Proxy()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            method, target, _version = self.rfile.readline().decode().split()
            head: list[str] = []
            length = 0
            while (line := self.rfile.readline().decode()) not in ("\r\n", "\n", ""):
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                if name.lower() not in ("connection", "proxy-connection"):
                    head.append(line)
            body = self.rfile.read(length)
            proxy.requested.append(target)
            parts = urlsplit(target)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            with socket.create_connection((parts.hostname, parts.port or 80)) as upstream:
                request = f"{method} {path} HTTP/1.1\r\n{''.join(head)}Connection: close\r\n\r\n"
                upstream.sendall(request.encode() + body)
                while data := upstream.recv(65536):
                    self.wfile.write(data)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
