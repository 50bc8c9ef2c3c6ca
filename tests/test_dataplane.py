"""The data plane's connections on loopback: tickets, TLS pinning, refusals, timeouts."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import pytest
import torch

from flsplit.dataplane import DataPlaneError, DataPlaneServer, StreamClosed, Ticket, dial
from flsplit.frames import FrameType, write_frame
from flsplit.wire import Packet, TensorSpec, gradient_specs, upload_specs

MAX = 64 << 20
SHAPE = (16, 8, 8)


def _dial(ticket: Ticket, node_id: int) -> object:
    return dial(ticket, node_id, timeout_s=5, max_frame_bytes=MAX, inactivity_s=5)


@pytest.mark.parametrize("tls", [True, False])
def test_a_ticket_admits_its_node_and_packets_flow_both_ways(tls: bool) -> None:
    with DataPlaneServer(tls=tls) as server:
        # Prepare
        client = _dial(server.ticket(node_id=7, round_number=1), 7)
        upstream = server.connection(7, timeout_s=5)
        z, y = torch.randn(4, *SHAPE), torch.tensor([0, 1, 2, 3])
        # Execute: an upload up, a gradient down
        client.send(Packet.upload(z, y, {"done": False}))
        got, _ = upstream.receive(upload_specs(SHAPE, 10))
        upstream.send(Packet.gradient(z * 2))
        reply, _ = client.receive(gradient_specs(SHAPE))
        # Assert
        assert torch.equal(got.activations, z) and torch.equal(got.labels, y) and got.info == {"done": False}
        assert torch.equal(reply.gradients, z * 2)
        assert bool(server.fingerprint) == tls
        client.close()
        upstream.close()


def test_bad_tickets_are_refused_and_logged_and_the_good_client_is_served(caplog: pytest.LogCaptureFixture) -> None:
    with DataPlaneServer() as server:
        # Prepare: one good ticket each for nodes 1 and 2
        good, other = server.ticket(1, 1), server.ticket(2, 1)
        # Execute: a made-up token, node 2's token presented by node 3, then node 1 twice (a replay)
        attempts = [replace(good, token="00" * 32), other]
        for ticket, node in zip(attempts, (1, 3)):
            with pytest.raises(StreamClosed, match="refused"):
                _dial(ticket, node).receive([])
        first = _dial(good, 1)
        admitted = server.connection(1, timeout_s=5)
        with pytest.raises(StreamClosed, match="already used"):
            _dial(good, 1).receive([])
        # Assert: the admitted stream still works; every refusal has a reason; no token in the log
        first.send(Packet(info={"ok": True}))
        assert admitted.receive([])[0].info == {"ok": True}
        assert len(server.refused) == 3
        assert any("presented by node 3" in r for r in server.refused)
        assert good.token not in caplog.text and other.token not in caplog.text


def test_a_certificate_that_is_not_this_runs_is_refused_by_the_client() -> None:
    with DataPlaneServer() as server:
        ticket = replace(server.ticket(1, 1), fingerprint="ab" * 32)
        with pytest.raises(DataPlaneError, match="does not match this run"):
            _dial(ticket, 1)


def test_a_peer_that_never_presents_a_ticket_is_dropped_after_the_handshake_timeout() -> None:
    with DataPlaneServer(tls=False, handshake_timeout_s=0.3) as server:
        # Execute: connect and say nothing
        idle = socket.create_connection(("127.0.0.1", server.port))
        idle.settimeout(5)
        # Assert: the server closes it (a CLOSE frame, then EOF) and records why
        received = b""
        while chunk := idle.recv(4096):
            received += chunk
        assert b"refused" in received
        assert any("timed out" in r for r in server.refused)
        idle.close()


def test_a_node_that_never_dials_is_a_clear_error_not_a_hang() -> None:
    with DataPlaneServer() as server:
        server.ticket(5, 1)
        with pytest.raises(DataPlaneError, match="node 5 did not connect.*stream-handshake-timeout.*transport='messages'"):
            server.connection(5, timeout_s=0.2)


def test_a_client_that_cannot_reach_the_server_names_the_key_and_the_fallback() -> None:
    # Prepare: a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Execute / Assert
    with pytest.raises(DataPlaneError, match="stream-advertise.*transport='messages'"):
        _dial(Ticket(f"127.0.0.1:{port}", "", "00" * 32), 1)


def test_a_silent_peer_mid_stream_is_a_timeout_naming_message_timeout() -> None:
    with DataPlaneServer(tls=False, inactivity_s=0.2) as server:
        client = _dial(server.ticket(1, 1), 1)
        upstream = server.connection(1, timeout_s=5)
        with pytest.raises(DataPlaneError, match="message-timeout"):
            upstream.receive([])
        client.close()


def test_an_oversized_frame_is_refused_with_its_limit() -> None:
    with DataPlaneServer(tls=False, max_frame_bytes=1 << 12) as server:
        client = _dial(server.ticket(1, 1), 1)
        upstream = server.connection(1, timeout_s=5)
        sender = threading.Thread(target=client.send, args=(Packet.upload(torch.randn(8, *SHAPE), torch.zeros(8, dtype=torch.long)),))
        sender.start()
        with pytest.raises(Exception, match="max-frame-mb"):
            upstream.receive(upload_specs(SHAPE, 10))
        upstream.close()
        sender.join(timeout=5)


def test_a_first_frame_that_is_not_a_ticket_is_refused() -> None:
    with DataPlaneServer(tls=False) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        write_frame(sock, FrameType.PACKET, Packet(info={"x": 1}))
        sock.settimeout(5)
        while sock.recv(4096):
            pass
        sock.close()
        assert any("not a ticket" in r for r in server.refused)


def test_a_spec_mismatch_on_the_stream_raises_the_payload_error() -> None:
    from flsplit.wire import PayloadError  # noqa: PLC0415

    with DataPlaneServer(tls=False) as server:
        client = _dial(server.ticket(1, 1), 1)
        upstream = server.connection(1, timeout_s=5)
        client.send(Packet.upload(torch.randn(2, *SHAPE), torch.tensor([0, 11])))
        with pytest.raises(PayloadError, match="label values"):
            upstream.receive([TensorSpec("activations", "z", torch.float32, (None, *SHAPE)), TensorSpec("labels", "y", torch.int64, (None,), 10)])


@pytest.mark.parametrize("tls", [True, False])
def test_readable_says_whether_a_frame_waits_without_blocking(tls: bool) -> None:
    # (asynchronous rounds poll every client's stream with it: apps.async_rounds)
    with DataPlaneServer(tls=tls) as server:
        # Prepare
        client = _dial(server.ticket(node_id=7, round_number=1), 7)
        upstream = server.connection(7, timeout_s=5)
        assert not upstream.readable()
        # Execute: two frames in one go, so that TLS may decrypt both into its own buffer at the first read
        client.send(Packet(info={"first": True}))
        client.send(Packet(info={"second": True}))
        deadline = time.monotonic() + 5
        while not upstream.readable():
            assert time.monotonic() < deadline, "a frame was sent, but readable() never said so"
            time.sleep(0.01)
        first, _ = upstream.receive([])
        # Assert: the second frame is still seen as waiting, wherever it is buffered
        assert first.info == {"first": True}
        while not upstream.readable():
            assert time.monotonic() < deadline, "the second frame was not seen"
            time.sleep(0.01)
        second, _ = upstream.receive([])
        assert second.info == {"second": True} and not upstream.readable()
        client.close()
        upstream.close()
