"""Communication ledger: serialized bytes per client, direction, kind and phase.

Training traffic and evaluation traffic are kept apart, and so are tensor payloads
(activations, labels, gradients, weights) and control records (round numbers, flags,
timings), so ``bytes_up``/``bytes_down`` mean what the papers count: the tensors that
training puts on the wire, as Flower serializes them. Every tensor kind has its own line
(labels too, which FSL-SAGE's reference counter leaves out).
"""

from __future__ import annotations

from collections import defaultdict

from flwr.app import RecordDict

from flsplit.wire import INFO, KINDS, serialized_size

Key = tuple[int, str, str, str]  # (client, direction, kind, phase)


class Ledger:
    """Counts every message's serialized content; ``round_summary`` closes a round."""

    def __init__(self) -> None:
        self._round: dict[Key, int] = defaultdict(int)
        self.totals: dict[Key, int] = defaultdict(int)
        self.messages = 0

    def count(self, client: int, direction: str, content: RecordDict, phase: str = "train") -> int:
        """Add one message's content; return its serialized size."""
        sizes = {name if name in KINDS else "control": serialized_size(record) for name, record in content.items()}
        return self.count_sizes(client, direction, sizes, phase)

    def count_sizes(self, client: int, direction: str, sizes: dict[str, int], phase: str = "train") -> int:
        """Add one message's or frame's bytes, given per kind (``control``: everything but tensors)."""
        for kind, size in sizes.items():
            # Model weights are training traffic, even when they ride on an evaluate message; a
            # slice handed from client to client (``client-sync = "relay"``) has a line of its own.
            if kind == "weights" and phase == "relay":
                kind = "relay"
            self._round[(client, direction, kind, "train" if kind in ("weights", "relay") or phase == "relay" else phase)] += size
        self.messages += 1
        return sum(sizes.values())

    def round_summary(self) -> dict[str, int]:
        """This round's byte counts as metrics fields; moves them into the run totals."""
        def total(direction: str | None = None, kind: str | None = None, phase: str = "train") -> int:
            return sum(
                v
                for (_, d, k, p), v in self._round.items()
                if p == phase and direction in (None, d) and kind in (None, k)
            )

        summary = {
            "bytes_up": total("up") - total("up", "control"),
            "bytes_down": total("down") - total("down", "control"),
            "bytes_up_activations": total("up", "activations"),
            "bytes_up_labels": total("up", "labels"),
            "bytes_down_gradients": total("down", "gradients"),
            # A U-shaped split's middle sends its output z2 down, and the client's head returns dL/dz2.
            "bytes_down_activations": total("down", "activations"),
            "bytes_up_gradients": total("up", "gradients"),
            "bytes_model_sync": total(None, "weights"),
            "bytes_model_relay": total(None, "relay"),
            "bytes_down_aux_model": total("down", "aux_model"),
            "bytes_control_up": total("up", "control"),
            "bytes_control_down": total("down", "control"),
            "bytes_eval_up": total("up", phase="eval"),
            "bytes_eval_down": total("down", phase="eval"),
            "bytes_eval_up_labels": total("up", "labels", phase="eval"),  # 0 in a U-shaped split
            "bytes_eval_down_activations": total("down", "activations", phase="eval"),
        }
        for key, value in self._round.items():
            self.totals[key] += value
        self._round.clear()
        return summary

    def state(self) -> dict:
        """Run totals and message count, for a checkpoint."""
        return {"totals": dict(self.totals), "messages": self.messages}

    def restore(self, state: dict) -> None:
        """Continue from ``state()`` of a checkpointed run."""
        self.totals = defaultdict(int, state["totals"])
        self.messages = state["messages"]


__all__ = ["Ledger", "INFO"]
