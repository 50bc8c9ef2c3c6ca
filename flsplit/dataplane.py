"""The data plane: one authenticated stream per client per round, beside Flower's messages.

The ServerApp listens on one TCP port (``DataPlaneServer``). Each round's training message
gives a client a ``Ticket``: the address to dial, the SHA-256 fingerprint of a certificate
made for this run, and a token for this run, node and round. The client dials out
(``dial``), as SuperNodes already do, checks the fingerprint, and presents the token as its
first frame. A token is accepted once and only from the node it was made for; anything else
is refused, logged without the token, and closed, and the rounds of the other clients go on.

Built on the standard library's ``socket`` and ``ssl``: blocking sockets with timeouts, one
short-lived thread per handshake, frames from ``flsplit.frames``. An 8 MiB round trip over
TLS on loopback costs ~18 ms this way (``../shared/notes/transport.md``); gRPC, which Flower
already ships, would add one or two copies per tensor and a HTTP/2 layer we do not need
between two parties that already trust Flower's channel for the ticket.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import select
import socket
import ssl
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from flsplit.certificates import pem_key, self_signed, write_private
from flsplit.frames import Frame, FrameType, Sent, decode_packet, read_frame, write_frame
from flsplit.wire import Packet, PayloadError, TensorSpec

LOG = logging.getLogger("flwr.flsplit.dataplane")
#: A ticket frame holds a token and two numbers; this bounds what an unauthenticated peer can send.
TICKET_FRAME_BYTES = 4096
#: Where each party's error tells the user to turn.
FALLBACK = "set transport='messages' to train over Flower's messages instead"


class DataPlaneError(RuntimeError):
    """The stream could not be set up or broke; the message names the setting to check."""


class StreamClosed(DataPlaneError):
    """The other side closed the stream (its reason, if it sent one, is the message)."""


@dataclass(frozen=True)
class Ticket:
    """What a client needs to join a round's data plane; it travels in the round's Flower message."""

    address: str  # host:port to dial
    fingerprint: str  # hex SHA-256 of the server certificate (DER); empty: plain TCP
    token: str  # hex, one use

    def as_info(self) -> dict[str, str]:
        return {"stream_address": self.address, "stream_fingerprint": self.fingerprint, "stream_token": self.token}

    @classmethod
    def from_info(cls, info: dict) -> Ticket:
        return cls(str(info["stream_address"]), str(info["stream_fingerprint"]), str(info["stream_token"]))


class Connection:
    """One side of an authenticated stream: packets out, validated packets in."""

    def __init__(self, sock: socket.socket, max_frame_bytes: int, inactivity_s: float, peer: str) -> None:
        self.sock, self.max_frame_bytes, self.peer = sock, max_frame_bytes, peer
        sock.settimeout(inactivity_s)

    def send(self, packet: Packet, wire_dtype: str = "fp32") -> Sent:
        """Write ``packet``; return the bytes it took per kind."""
        try:
            return write_frame(self.sock, FrameType.PACKET, packet, wire_dtype)
        except OSError as err:
            raise DataPlaneError(f"data plane: sending to {self.peer} failed ({err})") from None

    def receive(self, specs: Sequence[TensorSpec], same_batch: bool = True, wire_dtype: str = "fp32") -> tuple[Packet, Frame]:
        """The next packet, validated against ``specs`` if it carries tensors; ``StreamClosed`` if the peer ended the stream."""
        try:
            frame = read_frame(self.sock, self.max_frame_bytes)
        except TimeoutError:
            raise DataPlaneError(f"data plane: nothing from {self.peer} in {self.sock.gettimeout():.0f} s (message-timeout)") from None
        except OSError as err:
            raise DataPlaneError(f"data plane: receiving from {self.peer} failed ({err})") from None
        if frame.type == FrameType.CLOSE:
            raise StreamClosed(str(frame.header.get("reason", "closed")))
        if frame.type != FrameType.PACKET:
            raise PayloadError(f"frame: expected a packet, got {frame.type.name}")
        # As on the message path: a packet without tensors (a bare request, a "done") has no specs to meet.
        return decode_packet(frame, specs if frame.header.get("tensors") else [], same_batch, wire_dtype), frame

    def readable(self) -> bool:
        """Whether a frame (or the peer's end of the stream) waits to be read: ``receive`` would not block."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True  # decrypted bytes already in the TLS layer's buffer, which select cannot see
        return bool(select.select([self.sock], [], [], 0)[0])

    def finish(self) -> None:
        """End the stream after our last frame: wait for the peer to close first, then close.

        Closing a socket with unread bytes resets the connection, which can destroy frames still
        in flight to the peer; waiting for its end-of-stream (bounded by the inactivity timeout)
        makes sure the peer has read everything we sent.
        """
        try:
            while self.sock.recv(1 << 16):
                pass
        except OSError:
            pass
        self.sock.close()

    def close(self, reason: str = "") -> None:
        """Tell the peer why (best effort), then close."""
        try:
            if reason:
                write_frame(self.sock, FrameType.CLOSE, reason=reason)
        except OSError:
            pass
        self.sock.close()


def fingerprint_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _run_certificate(directory: Path) -> tuple[Path, Path, str]:
    """A self-signed certificate and key for this run only; returns their paths and the fingerprint.

    The client pins the fingerprint it got over Flower's authenticated channel, so no CA, host
    name or PKI is involved, and the key never leaves the ServerApp's temporary directory.
    """
    cert, key = self_signed("flsplit data plane", days=30)
    cert_path, key_path = directory / "dataplane.crt", directory / "dataplane.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(key_path, pem_key(key))
    return cert_path, key_path, fingerprint_of(cert.public_bytes(serialization.Encoding.DER))


def _split_address(address: str, key: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise DataPlaneError(f"{key}: '{address}' is not host:port (e.g. 0.0.0.0:9099, or port 0 for any free port)")
    return host.strip("[]"), int(port)


class DataPlaneServer:
    """The ServerApp's listener: issues tickets, admits each once, hands out the connections.

    ``listen`` is the address to bind (port 0: any free port); ``advertise`` the host:port the
    clients dial, for a ServerApp behind NAT or a router (empty: the bound address, with the
    host name in place of 0.0.0.0).
    """

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        advertise: str = "",
        tls: bool = True,
        max_frame_bytes: int = 256 << 20,
        handshake_timeout_s: float = 30.0,
        inactivity_s: float = 600.0,
    ) -> None:
        self.max_frame_bytes, self.handshake_timeout_s, self.inactivity_s = max_frame_bytes, handshake_timeout_s, inactivity_s
        host, port = _split_address(listen, "stream-listen")
        try:
            self._listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=64)
        except OSError as err:
            raise DataPlaneError(f"stream-listen: cannot listen on {listen} ({err}); pick another port or {FALLBACK}") from None
        bound_host, bound_port = self._listener.getsockname()[:2]
        if advertise:
            _split_address(advertise, "stream-advertise")
            self.address = advertise
        else:
            shown = socket.gethostname() if bound_host in ("0.0.0.0", "::") else bound_host
            self.address = f"{shown}:{bound_port}"
        self.port = bound_port
        self._tmp = tempfile.TemporaryDirectory(prefix="flsplit-dataplane-")
        self._context: ssl.SSLContext | None = None
        self.fingerprint = ""
        if tls:
            cert, key, self.fingerprint = _run_certificate(Path(self._tmp.name))
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.minimum_version = ssl.TLSVersion.TLSv1_3
            self._context.load_cert_chain(cert, key)
            # No session tickets: nobody resumes these sessions, and a ticket the client never
            # reads (DSL reads nothing down) would make its close() reset the connection and cut
            # off its last upload.
            self._context.num_tickets = 0
        self._tickets: dict[str, tuple[int, int]] = {}  # token -> (node id, round)
        self._ready: dict[int, Connection] = {}
        self._refused: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="flsplit-dataplane-accept", daemon=True)
        self._acceptor.start()

    def ticket(self, node_id: int, round_number: int) -> Ticket:
        """A one-use ticket for ``node_id`` in ``round_number``."""
        token = secrets.token_hex(32)
        with self._changed:
            self._tickets[token] = (node_id, round_number)
        return Ticket(self.address, self.fingerprint, token)

    def connection(self, node_id: int, timeout_s: float) -> Connection:
        """The node's admitted connection, waiting up to ``timeout_s`` for it to dial in."""
        with self._changed:
            if not self._changed.wait_for(lambda: node_id in self._ready or self._closed, timeout_s):
                raise DataPlaneError(
                    f"data plane: node {node_id} did not connect to {self.address} within {timeout_s:.0f} s "
                    f"(stream-handshake-timeout); check that clients can reach stream-advertise, or {FALLBACK}"
                )
            if self._closed:
                raise DataPlaneError("data plane: the listener is closed")
            return self._ready.pop(node_id)

    def revoke(self, node_id: int) -> None:
        """Forget the node's unused tickets and any connection it left (its round is over)."""
        with self._changed:
            self._tickets = {t: owner for t, owner in self._tickets.items() if owner[0] != node_id}
            stale = self._ready.pop(node_id, None)
        if stale is not None:
            stale.close("the round is over")

    @property
    def refused(self) -> list[str]:
        """Why each refused connection was refused (for tests and logs; never a token)."""
        with self._changed:
            return list(self._refused)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            ready, self._ready = list(self._ready.values()), {}
            self._changed.notify_all()
        self._listener.close()
        for connection in ready:
            connection.close("the server stopped")
        self._tmp.cleanup()

    def __enter__(self) -> DataPlaneServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._admit, args=(sock, f"{peer[0]}:{peer[1]}"), name="flsplit-dataplane-admit", daemon=True).start()

    def _admit(self, sock: socket.socket, peer: str) -> None:
        """Handshake (TLS, then the ticket frame) within the handshake timeout, or refuse."""
        sock.settimeout(self.handshake_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_side=True)
            frame = read_frame(sock, TICKET_FRAME_BYTES)
            node_id = self._check_ticket(frame)
        except (OSError, PayloadError, ssl.SSLError, DataPlaneError) as err:
            reason = f"{type(err).__name__}: {err}"
            LOG.warning("flsplit data plane: refused %s (%s)", peer, reason)
            with self._changed:
                self._refused.append(reason)
            Connection(sock, TICKET_FRAME_BYTES, 1.0, peer).close(f"refused: {err}")
            return
        with self._changed:
            if self._closed:
                sock.close()
                return
            self._ready[node_id] = Connection(sock, self.max_frame_bytes, self.inactivity_s, peer)
            self._changed.notify_all()

    def _check_ticket(self, frame: Frame) -> int:
        if frame.type != FrameType.TICKET:
            raise DataPlaneError(f"the first frame is {frame.type.name}, not a ticket")
        token, claimed = str(frame.header.get("token", "")), frame.header.get("node_id")
        with self._changed:
            match = next((t for t in self._tickets if hmac.compare_digest(t, token)), None)
            if match is None:
                raise DataPlaneError("unknown or already used token")
            node_id, _ = self._tickets.pop(match)  # once, whatever follows
        if claimed != node_id:
            raise DataPlaneError(f"a token of node {node_id} presented by node {claimed}")
        return node_id


def dial(ticket: Ticket, node_id: int, timeout_s: float, max_frame_bytes: int, inactivity_s: float) -> Connection:
    """Connect to the server's data plane and present the ticket; pin its certificate if TLS is on."""
    host, port = _split_address(ticket.address, "stream-advertise")
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as err:
        raise DataPlaneError(
            f"data plane: cannot connect to {ticket.address} ({err}); the server's stream-advertise address "
            f"must be reachable from this node (open its port in the firewall), or {FALLBACK}"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ticket.fingerprint:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # pinned below: the fingerprint came over Flower's channel
        try:
            sock = context.wrap_socket(sock)
        except (OSError, ssl.SSLError) as err:
            sock.close()
            raise DataPlaneError(f"data plane: TLS handshake with {ticket.address} failed ({err}); or {FALLBACK}") from None
        seen = fingerprint_of(sock.getpeercert(binary_form=True) or b"")
        if not hmac.compare_digest(seen, ticket.fingerprint):
            sock.close()
            raise DataPlaneError(f"data plane: the certificate of {ticket.address} does not match this run's (a different server answered)")
    connection = Connection(sock, max_frame_bytes, inactivity_s, ticket.address)
    try:
        write_frame(sock, FrameType.TICKET, token=ticket.token, node_id=node_id)
    except OSError as err:
        raise DataPlaneError(f"data plane: presenting the ticket to {ticket.address} failed ({err})") from None
    return connection
