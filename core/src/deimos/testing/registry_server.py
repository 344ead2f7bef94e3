"""A schema registry over real HTTP for tests: :class:`~deimos.schema.devregistry.RegistryStore`
behind ``http.server`` on 127.0.0.1, answering as Confluent's Schema Registry API reference
documents, with what tests need to break it on purpose.

- Basic auth: with ``user``/``password`` set, a request without them is answered
  ``401 {"error_code": 401, "message": "Unauthorized"}``.
- Protobuf text form: ``GET /schemas/ids/{id}`` and ``GET /subjects/{s}/versions/{v}`` answer
  a Protobuf schema in its ``.proto`` *text* form unless ``format=serialized`` is given, as a
  real registry does. The text comes from ``proto_text`` (file name -> ``.proto`` source) when
  the test gives it, else a ``.proto`` comment naming the file: text either way, never the
  base64 ``FileDescriptorProto`` a client registered.
- Faults: :meth:`fail_with` answers every request with an HTTP status (503, 429, 404 ...) and
  a body; :meth:`stop` closes the port (connection refused); :meth:`start` opens the same
  port again with the same store.
- :attr:`requests` records ``(method, path, query)`` of every request, and
  :attr:`auth_headers` the ``Authorization`` headers received.

Used by the plugins' registry tests; a user's suite can use it the same way. No registry
server is installable from PyPI, so this is how CI tests the client side of the HTTP protocol.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from deimos.schema.devregistry import RegistryStore


class RegistryServer:
    """``with RegistryServer(tmp_path / "registry.json") as server: server.url``"""

    def __init__(self, path: str | Path, *, user: str | None = None,
                 password: str | None = None,
                 proto_text: Mapping[str, str] | None = None) -> None:
        self.store = RegistryStore(path)
        self.user, self.password = user, password
        self.proto_text = dict(proto_text or {})
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.auth_headers: list[str | None] = []
        self.port = 0
        self._fault: tuple[int, Any] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: open client connections (HTTP/1.1 keep-alive), closed by :meth:`stop`
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RegistryServer:
        """Listen (again, on the same port after :meth:`stop`)."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="registry-server",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port and every open connection: clients get connection refused (or a
        reset kept-alive connection) until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._conn_lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_with(self, status: int | None, body: Any = None) -> None:
        """Answer every request with ``status`` (``None``: answer normally again)."""
        if status is None:
            self._fault = None
        else:
            self._fault = (status, body if body is not None else
                           {"error_code": status, "message": f"HTTP {status} injected"})

    # -- answers -----------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if self.user is None and self.password is None:
            return True
        expected = base64.b64encode(f"{self.user or ''}:{self.password or ''}".encode())
        return header == "Basic " + expected.decode()

    def _text_form(self, answer: Any) -> Any:
        if isinstance(answer, dict) and answer.get("schemaType") == "PROTOBUF":
            from google.protobuf import descriptor_pb2

            name = "unknown.proto"
            try:
                fdp = descriptor_pb2.FileDescriptorProto.FromString(
                    base64.standard_b64decode(answer["schema"]))
                name = fdp.name or name
            except Exception:
                return answer  # registered as text already
            text = self.proto_text.get(name, f"// {name}: the .proto text form\n"
                                             'syntax = "proto3";\n')
            answer = {**answer, "schema": text}
        return answer

    def answer(self, method: str, path: str, query: dict[str, str], body: Any,
               auth: str | None) -> tuple[int, Any]:
        self.requests.append((method, path, query))
        self.auth_headers.append(auth)
        if self._fault is not None:
            return self._fault
        if not self._authorized(auth):
            return 401, {"error_code": 401, "message": "Unauthorized"}
        status, out = self.store.handle(method, path, query, body)
        text_form = method == "GET" and query.get("format") != "serialized" and (
            path.strip("/").startswith("schemas/ids/") or "/versions/" in path)
        if status == 200 and text_form:
            out = self._text_form(out)
        return status, out

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner._conn_lock:
                    owner._connections.add(self.connection)

            def finish(self) -> None:
                with owner._conn_lock:
                    owner._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests read ``requests``, not stderr

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    status, out = 422, {"error_code": 42201, "message": "Invalid JSON"}
                else:
                    status, out = owner.answer(self.command, parts.path,
                                               dict(parse_qsl(parts.query)), body,
                                               self.headers.get("Authorization"))
                data = out if isinstance(out, bytes) else json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler
