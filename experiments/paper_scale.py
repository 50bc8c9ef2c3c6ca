"""One round's training traffic per method at this comparison's model and at the FSL-SAGE paper's.

Which method is cheapest on the wire is set mostly by two sizes: the parameters that model
exchanges move (the whole model for FedAvg, the client slice for the SplitFed family's and the
q-methods' averaging) and the activations per sample at the cut (what every split method
uploads). The FSL-SAGE paper's GB figures come from ResNet-18 cut after layer2 (2,048 floats per
sample, 11.2 M parameters); the comparison here runs ResNet-20 cut ``s`` (16,384 floats per
sample, 0.27 M parameters). This builds both networks with flsplit's own builders, counts their
parameters and cut activations, and gives each method's bytes per round of one epoch over
50,000 images and 3 clients. The same arithmetic is checked against the ledger's measured round
of the comparison (``compare_strategies.json``) for ResNet-20, so the ResNet-18 column rests on
a formula that matches what the ledger counted.

    python -m experiments.paper_scale     # seconds; writes results/paper_scale.{json,md}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from torch import nn

from experiments.compare_strategies import LABELS, METHODS, PAPER_GB
from experiments.compare_strategies import NAME as COMPARISON
from experiments.tables import RESULTS, write_results
from flsplit.models.heads import CutPoint, build_head
from flsplit.models.networks import build_model, resolve_cut

NAME = "paper_scale"
FLOAT = 4  # bytes: float32 on the wire (the comparison's wire-dtype)
LABEL = 8  # bytes: one int64 label per uploaded sample
SAMPLES = 50_000  # one epoch of CIFAR-10's training split, over all clients
CLIENTS = 3
#: Auxiliary head of each method that averages or downloads one (``METHODS`` in the comparison).
HEADS = {method: str(keys["aux-head"]) for method, keys in METHODS.items() if "aux-head" in keys}
#: (model, cut, heads) of the comparison here and of the FSL-SAGE paper
#: (``presets/fsl-sage-paper.toml``), whose CSE-FSL baseline trains and averages the same
#: ResNet-stage auxiliary model as FSL-SAGE (the reference's ``src/algos/cse_fsl.py``).
SETUPS = {"here": ("resnet20", "s", HEADS), "paper": ("resnet18", "4", HEADS | {"cse-fsl": "resnet-stage"})}
ALIGN_EVERY = {"here": int(METHODS["fsl-sage"]["align-every"]), "paper": 10}


def state_bytes(module: nn.Module) -> int:
    """Bytes of the arrays a model exchange ships: parameters and batch-norm buffers."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


@dataclass(frozen=True)
class Sizes:
    """What one network cut at one point puts on the wire, in bytes."""

    model: int  # the whole network's state (parameters and buffers)
    slice: int  # the client's bottom slice's state
    activation: int  # one sample's cut-layer activations
    heads: dict[str, int]  # method -> its auxiliary head's state

    @classmethod
    def of(cls, model_name: str, cut: str, heads_by_method: dict[str, str]) -> Sizes:
        model = build_model(model_name)
        blocks = resolve_cut(cut, model_name)
        point = CutPoint.of(model_name, blocks, num_classes=10)
        heads = {method: state_bytes(build_head(head, point)) for method, head in heads_by_method.items()}
        return cls(state_bytes(model), state_bytes(model[: blocks + 1]), FLOAT * math.prod(point.shape), heads)


def round_bytes(method: str, sizes: Sizes, upload_every: int = 5, align_every: int = 5) -> float:
    """Training bytes of one round of one local epoch, averaged over an alignment period.

    Split methods upload every sample (q-methods every ``upload_every``-th batch); CSL and
    SplitFed get a gradient back per sample; every method but CSL and DSL averages its client
    slice (up and down, per client); CSE-FSL averages its head too; FSL-SAGE downloads one
    aligned estimator per client every ``align_every`` rounds.
    """
    sync = 2 * CLIENTS * sizes.slice
    every_sample = SAMPLES * (sizes.activation + LABEL)
    one_in_q = every_sample / upload_every
    return {
        "fedavg": 2 * CLIENTS * sizes.model,
        "csl": every_sample + SAMPLES * sizes.activation,
        "splitfed-v1": every_sample + SAMPLES * sizes.activation + sync,
        "splitfed-v2": every_sample + SAMPLES * sizes.activation + sync,
        "dsl": every_sample,
        "cse-fsl": one_in_q + sync + 2 * CLIENTS * sizes.heads.get("cse-fsl", 0),
        "fsl-sage": one_in_q + sync + CLIENTS * sizes.heads.get("fsl-sage", 0) / align_every,
    }[method]


def measured_round_bytes(method: str) -> float | None:
    """The comparison's ledger: training bytes per round, averaged over the rounds it ran."""
    path = RESULTS / f"{COMPARISON}.json"
    if not path.exists():
        return None
    rounds = json.loads(path.read_text())["methods"].get(method, {}).get("rounds", [])
    if not rounds:
        return None
    return sum(r["bytes_up"] + r["bytes_down"] for r in rounds) / len(rounds)


def main() -> None:
    sizes = {setup: Sizes.of(*model_cut) for setup, model_cut in SETUPS.items()}
    rows = []
    for method, label in LABELS.items():
        here = round_bytes(method, sizes["here"], align_every=ALIGN_EVERY["here"])
        paper = round_bytes(method, sizes["paper"], align_every=ALIGN_EVERY["paper"])
        measured = measured_round_bytes(method)
        rows.append(
            {
                "method": label,
                "ResNet-20 cut s: measured GB/round": None if measured is None else round(measured / 1e9, 4),
                "ResNet-20 cut s: formula GB/round": round(here / 1e9, 4),
                "formula vs measured (%)": None
                if measured is None
                else round(100 * (here / measured - 1), 2) + 0.0,  # + 0.0: no "-0"
                "ResNet-18 cut layer2: formula GB/round": round(paper / 1e9, 4),
                "paper: GB to ~81 %": PAPER_GB.get(method),
            }
        )
    extra = {
        "settings": {"samples_per_round": SAMPLES, "clients": CLIENTS, "upload_every": 5, "align_every": ALIGN_EVERY},
        "sizes_bytes": {setup: vars(s) for setup, s in sizes.items()},
    }
    print(json.dumps(extra["sizes_bytes"], indent=1))
    print(write_results(NAME, rows, extra))


if __name__ == "__main__":
    main()
