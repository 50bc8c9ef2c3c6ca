"""How many test predictions a lossy ``eval-wire-dtype`` changes, at a trained network.

Rebuilds a finished run's halves from its checkpoints (the server's ``checkpoint.pt`` and one
client's slice of the same round), embeds the test split once, and scores the same activations
after a round trip through each wire dtype (``flsplit.compression``, what the wire does) against
fp32. The count of changed argmaxes is the tolerance ``docs/settings.md`` states for
``eval-wire-dtype``. Writes ``experiments/results/eval_precision.json`` and ``.md``.

    python -m experiments.eval_precision --run results/reproduce/cpu-long/cifar10-n1-cuts-csl --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from experiments.tables import write_results
from flsplit import checkpoint
from flsplit.compression import compress, decompress
from flsplit.config import RunConfig, run_config_keys
from flsplit.data import eval_indices, load_dataset, test_tensors
from flsplit.split import build_halves
from flsplit.wire import load_weights
from strategies import parse_config

WIRE_DTYPES = ("fp16", "bf16", "int8")
BATCH = 500


def trained_halves(run: Path, partition: int, data_dir: str) -> tuple[RunConfig, torch.nn.Module, torch.nn.Module, int]:
    """``(config, bottom, top, round)``: the run's last checkpointed round, rebuilt."""
    saved = json.loads((run / "config.json").read_text())
    keys = run_config_keys()  # config.json also holds run facts
    config = parse_config({k: v for k, v in saved.items() if k in keys} | {"data-dir": data_dir})
    server = checkpoint.load(run / "checkpoint.pt")
    round_number = int(server["round"])
    bottom, top, _ = build_halves(config)
    top.load_state_dict(server["top"])
    client = checkpoint.load(run / "clients" / f"round-{round_number}" / f"partition-{partition}.pt")
    load_weights({"bottom": bottom}, {k: v for k, v in client["weights"].items() if k.startswith("bottom.")})
    return config, bottom.eval(), top.eval(), round_number


def changed_predictions(bottom: torch.nn.Module, top: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[dict[str, Any]]:
    """Per wire dtype: argmaxes that differ from fp32's, and the accuracy of each."""
    rows = []
    with torch.no_grad():
        activations = [bottom(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
        reference = torch.cat([top(z).argmax(1) for z in activations])
        rows.append({"wire dtype": "fp32", "changed argmaxes": 0, "test acc. (%)": 100 * float((reference == labels).float().mean())})
        for dtype in WIRE_DTYPES:
            predicted = torch.cat([top(decompress(compress(z, dtype), dtype)).argmax(1) for z in activations])
            rows.append(
                {
                    "wire dtype": dtype,
                    "changed argmaxes": int((predicted != reference).sum()),
                    "test acc. (%)": 100 * float((predicted == labels).float().mean()),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run's folder (config.json, checkpoint.pt, clients/)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--partition", type=int, default=0, help="whose slice embeds the test split")
    args = parser.parse_args()
    config, bottom, top, round_number = trained_halves(args.run, args.partition, str(Path(args.data_dir).resolve()))
    data = load_dataset(config.dataset, config.data_dir, config.seed, config.data_options)
    images, labels = test_tensors(data, eval_indices(data))
    rows = changed_predictions(bottom, top, images, labels)
    facts = {"run": args.run.name, "round": round_number, "model": config.model, "cut": config.cut, "test images": len(labels)}
    print(write_results("eval_precision", rows, facts))


if __name__ == "__main__":
    main()
