"""What a payload costs to put on the wire and take off it: the message codec against the data plane's frames.

For a CSL batch at cut ``s`` (128 x 16 x 32 x 32 fp32 activations, 8 MiB) and a DSL chunk of
eight batches (64 MiB), side by side in one run, the median of ``--repeats``:

- ``messages``: ``flsplit.wire.encode`` (tensor to Flower ``RecordDict``) plus
  ``flsplit.wire.decode`` against the activation specs, the part of a message's cost that is
  flsplit's (Flower's own transport comes on top: ``experiments/message_breakdown.py``);
- ``frames``: ``write_frame`` into a loopback socket, ``read_frame`` and ``decode_packet`` on
  the other end (a thread each), so the transfer itself is included;
- ``frames_tls``: the same through ``DataPlaneServer`` and ``dial`` with TLS 1.3, as on SuperNodes.

    python -m experiments.frame_codec        # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import socket
import threading
from collections.abc import Callable

import torch

from experiments.tables import write_results
from experiments.timing import median_ms
from flsplit.dataplane import DataPlaneServer, dial
from flsplit.frames import FrameType, decode_packet, read_frame, write_frame
from flsplit.wire import Packet, decode, encode, upload_specs

ACTIVATION = (16, 32, 32)  # resnet20 cut s
PAYLOADS_MIB = (8, 64)
MAX_FRAME = 1 << 30


def _one_way(sender: object, receiver: object, packet: Packet, specs: list) -> Callable[[], None]:
    """One frame from ``sender`` to ``receiver`` (sockets), decoded and validated."""

    def step() -> None:
        writer = threading.Thread(target=write_frame, args=(sender, FrameType.PACKET, packet))
        writer.start()
        decode_packet(read_frame(receiver, MAX_FRAME), specs)
        writer.join()

    return step


def measure(mib: int, repeats: int) -> dict:
    batch = mib * (1 << 20) // (4 * ACTIVATION[0] * ACTIVATION[1] * ACTIVATION[2])
    packet = Packet.upload(torch.randn(batch, *ACTIVATION), torch.randint(0, 10, (batch,)), {"batch_sizes": [batch]})
    specs = upload_specs(ACTIVATION, 10)
    content = encode(packet)
    left, right = socket.socketpair()
    with DataPlaneServer(tls=True) as plane:
        client = dial(plane.ticket(1, 1), 1, 10, MAX_FRAME, 60)
        server = plane.connection(1, 10)
        row = {
            "payload_mib": mib,
            "messages_encode_decode_ms": median_ms(lambda: decode(encode(packet), specs), repeats),
            "messages_encode_ms": median_ms(lambda: encode(packet), repeats),
            "messages_decode_ms": median_ms(lambda: decode(content, specs), repeats),
            "frames_socketpair_ms": median_ms(_one_way(left, right, packet, specs), repeats),
            "frames_tls_loopback_ms": median_ms(_one_way(client.sock, server.sock, packet, specs), repeats),
        }
        client.close()
        server.close()
    left.close()
    right.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [measure(mib, args.repeats) for mib in PAYLOADS_MIB]
    facts = {"repeats": args.repeats, "torch_threads": torch.get_num_threads(), "activation": list(ACTIVATION)}
    print(write_results("frame_codec", rows, facts))


if __name__ == "__main__":
    main()
