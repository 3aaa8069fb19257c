"""A loopback Socket Mode endpoint: a minimal RFC 6455 WebSocket server, stdlib only.

Just enough WebSocket for slack-sdk's built-in `SocketModeClient`, which speaks plain
`ws://` to any port but 443: the opening handshake, text frames (unfragmented), ping and
pong, and close. `FakeSlack(app_token=...)` starts one and hands its URL out from
`apps.connections.open`; tests then press a card's buttons or send a slash command as
Slack would (an envelope), and see the client's acknowledgements of them.

    with FakeSlack(token, app_token=APP_TOKEN) as slack:
        socket = slack.socket_mode
        socket.wait_for_connections(1)
        envelope = socket.press(card, "ack", user="U0ALICE")
        socket.wait_for_ack(envelope)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["FakeSocketMode"]

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


class _Peer:
    """One accepted WebSocket connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.open = True

    def send(self, opcode: int, payload: bytes) -> None:
        """Server frames are never masked (RFC 6455 5.1)."""
        header = bytes([0x80 | opcode])
        size = len(payload)
        if size <= 125:
            header += bytes([size])
        elif size <= 0xFFFF:
            header += bytes([126]) + struct.pack("!H", size)
        else:
            header += bytes([127]) + struct.pack("!Q", size)
        with self.lock:
            if self.open:
                with contextlib.suppress(OSError):
                    self.sock.sendall(header + payload)

    def close(self) -> None:
        with self.lock:
            self.open = False
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()


class FakeSocketMode:
    """The WebSocket side of a fake Slack app; every method is thread-safe."""

    def __init__(self, *, response_url: Callable[[], str], host: str = "127.0.0.1") -> None:
        self._response_url = response_url
        self._host = host
        self._listener: socket.socket | None = None
        self._cond = threading.Condition()
        self._peers: list[_Peer] = []
        self._connections = 0
        self._received: list[dict[str, Any]] = []
        self._closing = False

    # lifecycle

    def start(self) -> FakeSocketMode:
        listener = socket.create_server((self._host, 0))
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        with self._cond:
            self._closing = True
            peers = list(self._peers)
        for peer in peers:
            peer.close()
        if self._listener is not None:
            self._listener.close()

    @property
    def url(self) -> str:
        assert self._listener is not None, "FakeSocketMode is not started"
        host, port = self._listener.getsockname()[:2]
        return f"ws://{host}:{port}/link/?ticket={uuid.uuid4().hex}"

    # observing

    @property
    def connections(self) -> int:
        """WebSocket handshakes completed so far."""
        with self._cond:
            return self._connections

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every JSON text frame the client sent (envelope acknowledgements)."""
        with self._cond:
            return list(self._received)

    def acked(self, envelope_id: str) -> dict[str, Any] | None:
        return next((m for m in self.received if m.get("envelope_id") == envelope_id), None)

    def wait_for_connections(self, count: int, timeout: float = 15.0) -> None:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._live() and self._connections >= count, timeout
            ):
                raise TimeoutError(f"FakeSocketMode: {self._connections} connections, not {count}")

    def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        with self._cond:
            self._cond.wait_for(lambda: self._ack_of(envelope_id) is not None, timeout)
            found = self._ack_of(envelope_id)
        if found is None:
            raise TimeoutError(f"FakeSocketMode: envelope {envelope_id} not acknowledged")
        return found

    # acting as Slack

    def press(self, card: Any, action_id: str, *, user: str, option: str | None = None) -> str:
        """Press the control `action_id` of `card` (a `SlackCall`), as `user`; its envelope id.

        The action is built from the control the card really carries (its block id, the
        button's value, the chosen option of a select), so a card without it cannot be
        pressed.
        """
        for block in card.blocks:
            if block.get("type") != "actions":
                continue
            for element in block.get("elements", []):
                if element.get("action_id") != action_id:
                    continue
                action: dict[str, Any] = {
                    "action_id": action_id,
                    "block_id": block.get("block_id"),
                    "type": element.get("type"),
                    "action_ts": f"{time.time():.6f}",
                }
                if "value" in element:
                    action["value"] = element["value"]
                if element.get("type") == "static_select":
                    chosen = next(o for o in element["options"] if o["value"] == option)
                    action["selected_option"] = chosen
                return self.send_envelope(
                    "interactive",
                    {
                        "type": "block_actions",
                        "user": {"id": user, "username": user.lower(), "team_id": "T0FAKE000"},
                        "team": {"id": "T0FAKE000"},
                        "api_app_id": "A0FAKE000",
                        "container": {
                            "type": "message",
                            "message_ts": card.ts,
                            "channel_id": card.channel,
                        },
                        "channel": {"id": card.channel},
                        "message": {"ts": card.ts, "text": card.text, "blocks": list(card.blocks)},
                        "trigger_id": uuid.uuid4().hex,
                        "response_url": self._response_url(),
                        "actions": [action],
                    },
                )
        raise AssertionError(f"the card has no {action_id!r} control: {card.blocks}")

    def slash(self, text: str, *, user: str, command: str = "/watchdog") -> str:
        """Send a slash command as `user`; its envelope id."""
        return self.send_envelope(
            "slash_commands",
            {
                "command": command,
                "text": text,
                "user_id": user,
                "team_id": "T0FAKE000",
                "channel_id": "C0FAKE000",
                "response_url": self._response_url(),
                "trigger_id": uuid.uuid4().hex,
            },
            accepts_response_payload=True,
        )

    def send_envelope(
        self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool = False
    ) -> str:
        envelope_id = str(uuid.uuid4())
        message = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
            "payload": payload,
        }
        peer = self._current()
        peer.send(_TEXT, json.dumps(message).encode())
        return envelope_id

    def drop(self, *, abrupt: bool = False) -> None:
        """Close the current connection: a close frame, then the socket, as Slack may; or,
        `abrupt`, just the socket, as a reset proxy or a lost NAT mapping would."""
        peer = self._current()
        if not abrupt:
            peer.send(_CLOSE, struct.pack("!H", 1001) + b"going away")
        peer.close()

    # serving

    def _current(self) -> _Peer:
        with self._cond:
            live = self._live()
            if live is None:
                raise AssertionError("FakeSocketMode: no client is connected")
            return live

    def _live(self) -> _Peer | None:
        """The newest open connection (the caller holds the condition)."""
        return next((p for p in reversed(self._peers) if p.open), None)

    def _ack_of(self, envelope_id: str) -> dict[str, Any] | None:
        return next((m for m in self._received if m.get("envelope_id") == envelope_id), None)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        try:
            if not self._handshake(sock, reader):
                sock.close()
                return
            peer = _Peer(sock)
            with self._cond:
                if self._closing:
                    peer.close()
                    return
                self._peers.append(peer)
                self._connections += 1
                self._cond.notify_all()
            hello = {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0"}}
            peer.send(_TEXT, json.dumps(hello).encode())
            self._frames(peer, reader)
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                for peer in self._peers:
                    if peer.sock is sock:
                        peer.open = False
                self._cond.notify_all()
            with contextlib.suppress(OSError):
                sock.close()

    def _handshake(self, sock: socket.socket, reader: Any) -> bool:
        headers: dict[str, str] = {}
        request_line = reader.readline()
        if not request_line.startswith(b"GET "):
            return False
        while True:
            line = reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key")
        if not key or headers.get("upgrade", "").lower() != "websocket":
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return False
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        return True

    def _frames(self, peer: _Peer, reader: Any) -> None:
        """Read the client's frames (always masked) until it closes."""
        while True:
            head = reader.read(2)
            if len(head) < 2:
                return
            opcode, masked, size = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", reader.read(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", reader.read(8))
            mask = reader.read(4) if masked else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(reader.read(size)))
            if opcode == _PING:
                peer.send(_PONG, data)
            elif opcode == _CLOSE:
                peer.send(_CLOSE, data[:2])
                peer.close()
                return
            elif opcode == _TEXT:
                with contextlib.suppress(ValueError):
                    message = json.loads(data)
                    with self._cond:
                        self._received.append(message)
                        self._cond.notify_all()
