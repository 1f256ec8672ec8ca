"""A device-side ADB protocol server for the tests. **A protocol fixture, not Android.**

No adbd and no Android images exist on the test machines, so this small server
speaks the device half of the ADB wire protocol over TCP — the ``CNXN`` handshake,
streams (``OPEN``/``OKAY``/``WRTE``/``CLSE``), ``shell`` with shell protocol v2 (exit
codes, separate stderr, stdin) and the ``sync`` service (``STAT``/``SEND``/``RECV``/
``LIST``) — so Debian's real ``adb`` client and server (``adb connect``, ``adb push``,
``adb shell``) talk to it exactly as to a phone. Shell commands run with the host's
``/bin/sh``; a ``python3`` on its PATH can be the qemu sysroot's ARM Python. There is
no Android userland, no ``getprop``, no SELinux and no ``/data``: paths are host paths.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import threading
from typing import Optional

A_SYNC, A_CNXN, A_OPEN, A_OKAY = 0x434E5953, 0x4E584E43, 0x4E45504F, 0x59414B4F
A_CLSE, A_WRTE, A_AUTH = 0x45534C43, 0x45545257, 0x48545541
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
_HEADER = struct.Struct("<6I")
BANNER = (b"device::ro.product.name=edgeqd_fixture;ro.product.model=edgeqd-adb-protocol-fixture;"
          b"ro.product.device=fixture;features=shell_v2,cmd\x00")
# Shell protocol v2 packet ids.
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 0, 1, 2, 3, 4


class _Connection:
    """One adb server connection: a message loop and its streams."""

    def __init__(self, sock: socket.socket, env: dict) -> None:
        self.sock, self.env = sock, env
        self.lock = threading.Lock()
        self.streams: dict[int, "_Stream"] = {}
        self.next_id = 1
        self.max_payload = MAX_PAYLOAD

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        header = _HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF)
        with self.lock:
            self.sock.sendall(header + data)

    def _read(self, size: int) -> bytes:
        buffer = b""
        while len(buffer) < size:
            chunk = self.sock.recv(size - len(buffer))
            if not chunk:
                raise ConnectionError("adb server closed the connection")
            buffer += chunk
        return buffer

    def serve(self) -> None:
        try:
            while True:
                command, arg0, arg1, length, _check, _magic = _HEADER.unpack(self._read(_HEADER.size))
                data = self._read(length) if length else b""
                self._dispatch(command, arg0, arg1, data)
        except (ConnectionError, OSError):
            pass
        finally:
            for stream in list(self.streams.values()):
                stream.closed_by_host()
            try:
                self.sock.close()
            except OSError:
                pass

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self.max_payload = min(arg1 or MAX_PAYLOAD, MAX_PAYLOAD)
            self.send(A_CNXN, A_VERSION, self.max_payload, BANNER)
        elif command == A_OPEN:
            service = data.rstrip(b"\x00").decode("utf-8", "replace")
            local_id = self.next_id
            self.next_id += 1
            stream = _open_stream(self, local_id, arg0, service)
            if stream is None:
                self.send(A_CLSE, 0, arg0)
                return
            self.streams[local_id] = stream
            self.send(A_OKAY, local_id, arg0)
            stream.start()
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is not None:
                self.send(A_OKAY, arg1, arg0)
                stream.received(data)
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.acked.set()
        elif command == A_CLSE:
            stream = self.streams.pop(arg1, None)
            if stream is not None:
                stream.closed_by_host()


class _Stream:
    """A device-side stream: writes wait for the host's OKAY (adb's flow control)."""

    def __init__(self, connection: _Connection, local_id: int, remote_id: int) -> None:
        self.connection, self.local_id, self.remote_id = connection, local_id, remote_id
        self.acked = threading.Event()
        self.acked.set()
        self.open = True

    def write(self, data: bytes) -> None:
        step = self.connection.max_payload
        for start in range(0, len(data), step):
            if not self.open:
                return
            self.acked.wait(timeout=60)
            self.acked.clear()
            self.connection.send(A_WRTE, self.local_id, self.remote_id, data[start:start + step])

    def close(self) -> None:
        if self.open:
            self.open = False
            self.acked.wait(timeout=10)
            self.connection.streams.pop(self.local_id, None)
            try:
                self.connection.send(A_CLSE, self.local_id, self.remote_id)
            except OSError:
                pass

    def start(self) -> None:
        pass

    def received(self, data: bytes) -> None:
        pass

    def closed_by_host(self) -> None:
        self.open = False


class _ShellStream(_Stream):
    """``shell[,v2][,raw]:command`` — a host ``/bin/sh -c command``."""

    def __init__(self, connection, local_id, remote_id, command: str, v2: bool) -> None:
        super().__init__(connection, local_id, remote_id)
        self.command, self.v2 = command, v2
        self.pending = b""
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["/bin/sh", "-c", self.command or "exit 0"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE if self.v2 else subprocess.STDOUT,
                                     env=self.connection.env, cwd="/")
        threading.Thread(target=self._pump, daemon=True).start()

    def _packet(self, kind: int, payload: bytes) -> bytes:
        return struct.pack("<BI", kind, len(payload)) + payload if self.v2 else payload

    def _pump(self) -> None:
        readers = [threading.Thread(target=self._forward, args=(self.proc.stdout, SHELL_STDOUT), daemon=True)]
        if self.v2:
            readers.append(threading.Thread(target=self._forward, args=(self.proc.stderr, SHELL_STDERR),
                                            daemon=True))
        for reader in readers:
            reader.start()
        code = self.proc.wait()
        for reader in readers:
            reader.join()
        if self.v2 and self.open:
            self.write(self._packet(SHELL_EXIT, bytes([code & 0xFF])))
        self.close()

    def _forward(self, pipe, kind: int) -> None:
        for block in iter(lambda: pipe.read1(65536), b""):
            if self.open:
                try:
                    self.write(self._packet(kind, block))
                except OSError:
                    return

    def received(self, data: bytes) -> None:
        if not self.v2:
            self._stdin(data)
            return
        self.pending += data
        while len(self.pending) >= 5:
            kind, length = struct.unpack("<BI", self.pending[:5])
            if len(self.pending) < 5 + length:
                break
            payload, self.pending = self.pending[5:5 + length], self.pending[5 + length:]
            if kind == SHELL_STDIN:
                self._stdin(payload)
            elif kind == SHELL_CLOSE_STDIN:
                self._close_stdin()

    def _stdin(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def _close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass

    def closed_by_host(self) -> None:
        # The adb client went away (or the connection dropped): the command's stdin ends,
        # as on a phone when the shell channel closes.
        super().closed_by_host()
        if self.proc is not None:
            self._close_stdin()


class _SyncStream(_Stream):
    """``sync:`` — the file transfer service behind ``adb push``/``pull``."""

    def __init__(self, connection, local_id, remote_id) -> None:
        super().__init__(connection, local_id, remote_id)
        self.buffer = b""
        self.receiving: Optional[tuple[str, int]] = None
        self.chunks: list[bytes] = []
        self.work = threading.Lock()

    def received(self, data: bytes) -> None:
        with self.work:
            self.buffer += data
            while len(self.buffer) >= 8:
                request, length = self.buffer[:4], struct.unpack("<I", self.buffer[4:8])[0]
                if request in (b"DATA", b"STAT", b"LIST", b"SEND", b"RECV") and len(self.buffer) < 8 + length:
                    return
                if request == b"DONE" or request == b"QUIT":
                    body, self.buffer = b"", self.buffer[8:]
                else:
                    body, self.buffer = self.buffer[8:8 + length], self.buffer[8 + length:]
                self._request(request, length, body)

    def _reply(self, data: bytes) -> None:
        threading.Thread(target=self.write, args=(data,), daemon=True).start()

    def _request(self, request: bytes, length: int, body: bytes) -> None:
        if request == b"STAT":
            try:
                info = os.stat(body.decode())
                self._reply(b"STAT" + struct.pack("<III", info.st_mode, info.st_size & 0xFFFFFFFF,
                                                  int(info.st_mtime)))
            except OSError:
                self._reply(b"STAT" + struct.pack("<III", 0, 0, 0))
        elif request == b"SEND":
            path, _, mode = body.decode().rpartition(",")
            self.receiving, self.chunks = (path, int(mode or "420")), []
        elif request == b"DATA" and self.receiving:
            self.chunks.append(body)
        elif request == b"DONE" and self.receiving:
            path, mode = self.receiving
            self.receiving = None
            try:
                with open(path, "wb") as handle:
                    handle.write(b"".join(self.chunks))
                os.chmod(path, stat.S_IMODE(mode))
                self._reply(b"OKAY" + struct.pack("<I", 0))
            except OSError as exc:
                message = f"{path}: {exc.strerror}".encode()
                self._reply(b"FAIL" + struct.pack("<I", len(message)) + message)
        elif request == b"RECV":
            try:
                with open(body.decode(), "rb") as handle:
                    content = handle.read()
                out = b"".join(b"DATA" + struct.pack("<I", len(content[i:i + 65536])) + content[i:i + 65536]
                               for i in range(0, len(content), 65536))
                self._reply(out + b"DONE" + struct.pack("<I", 0))
            except OSError as exc:
                message = str(exc).encode()
                self._reply(b"FAIL" + struct.pack("<I", len(message)) + message)
        elif request == b"LIST":
            out = b""
            try:
                for name in os.listdir(body.decode()):
                    info = os.lstat(os.path.join(body.decode(), name))
                    out += b"DENT" + struct.pack("<IIII", info.st_mode, info.st_size & 0xFFFFFFFF,
                                                 int(info.st_mtime), len(name.encode())) + name.encode()
            except OSError:
                pass
            self._reply(out + b"DONE" + struct.pack("<IIII", 0, 0, 0, 0))
        elif request == b"QUIT":
            threading.Thread(target=self.close, daemon=True).start()


def _open_stream(connection: _Connection, local_id: int, remote_id: int, service: str) -> Optional[_Stream]:
    name, _, argument = service.partition(":")
    parts = name.split(",")
    if parts[0] == "shell":
        return _ShellStream(connection, local_id, remote_id, argument, v2="v2" in parts[1:])
    if parts[0] == "exec":
        return _ShellStream(connection, local_id, remote_id, argument, v2=False)
    if service.startswith("sync:"):
        return _SyncStream(connection, local_id, remote_id)
    return None


class AdbProtocolFixture:
    """Listen on 127.0.0.1 (an ephemeral port, never adb's 5555–5585 scan range).

    Args:
        env: environment of the shell commands (put a ``python3`` shim first on PATH).

    >>> fixture = AdbProtocolFixture(dict(os.environ)); fixture.start(); fixture.stop()  # doctest: +SKIP
    """

    def __init__(self, env: dict) -> None:
        self.env = env
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []

    def start(self) -> "AdbProtocolFixture":
        self.server.listen(4)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(sock)
            threading.Thread(target=_Connection(sock, self.env).serve, daemon=True).start()

    def drop_connections(self) -> None:
        """Cut every adb connection, as when a phone's cable is pulled."""
        for sock in self.connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass
        self.connections.clear()

    def stop(self) -> None:
        self.drop_connections()
        self.server.close()
