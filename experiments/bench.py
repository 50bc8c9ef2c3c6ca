"""Side-by-side benchmark: flsplit through ``flwr run`` against a plain PyTorch loop.

In one run, on the same data and batches (resnet20, cut ``s``, CIFAR-10, 2 clients, IID, a fixed
number of batches per client), it measures:

- (a) the reference: one process, no messages, the same split computation (bottom slice,
  auxiliary head or server gradient, top slice) on the same batches in the same order;
- (b) the same training through ``flwr run`` in the simulation engine, for DSL and CSL;

and reports b/a per strategy, CSL's per-batch round trip, wire bytes against raw tensor bytes,
and peak RSS per process. Flower's fixed start-up (SuperLink, Ray, first data load) is excluded
from the per-round figure: round 1 warms up, round 2 is timed, and the start-up is reported on
its own. Medians over ``--repeats``. Writes ``experiments/results/bench.json`` and a markdown
table ``bench.md``.

    python -m experiments.bench --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.tables import write_results
from flsplit.config import parse_run_config
from flsplit.data import PartitionLoader, load_dataset, partition_indices
from flsplit.launcher import SuperLink
from flsplit.optim import build_optimizer
from flsplit.results import read_metrics
from flsplit.split import build_halves

CLIENTS = 2


def reference_epoch(strategy: str, data_dir: str, batches: int) -> tuple[float, int]:
    """Seconds for ``batches`` steps per client, served round-robin, in one process; raw z bytes."""
    config = parse_run_config({"strategy": strategy, "dataset": "cifar10", "data-dir": data_dir, "model": "resnet20"})
    data = load_dataset("cifar10", data_dir)
    loaders = [
        PartitionLoader(data, partition_indices(data.train.labels, i, CLIENTS, "iid", seed=0), config.batch_size, 0, i)
        for i in range(CLIENTS)
    ]
    clients = []
    for _ in range(CLIENTS):
        bottom, _, aux = build_halves(config)
        params = list(bottom.parameters()) + (list(aux.parameters()) if strategy == "dsl" else [])
        clients.append((bottom, aux, build_optimizer(params, config)))
    _, top, _ = build_halves(config)
    top_opt = build_optimizer(list(top.parameters()), config)
    raw = 0
    started = time.perf_counter()
    for step in range(batches):
        for (bottom, aux, opt), loader in zip(clients, loaders):
            x, y = loader.batch(step)
            z = bottom(x)
            raw += z.numel() * 4
            if strategy == "dsl":
                opt.zero_grad()
                F.cross_entropy(aux(z), y).backward()
                opt.step()
                z = z.detach()
            else:
                z_server = z.detach().requires_grad_()
            z_in = z if strategy == "dsl" else z_server
            top_opt.zero_grad()
            F.cross_entropy(top(z_in), y).backward()
            top_opt.step()
            if strategy == "csl":
                opt.zero_grad()
                z.backward(z_server.grad)
                opt.step()
    return time.perf_counter() - started, raw


def flower_run(link: SuperLink, strategy: str, data_dir: str, batches: int, work: Path, name: str) -> dict:
    """Two rounds through ``flwr run``; timing of round 2 and the whole run's wall clock."""
    started = time.perf_counter()
    done = link.run(
        f"strategy='{strategy}' model='resnet20' dataset='cifar10' data-dir='{data_dir}' num-server-rounds=2 "
        f"max-batches={batches} eval-samples=256 results-dir='{work}' run-name='{name}'",
        timeout_s=1800,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    rounds = read_metrics(work / name / "metrics.jsonl")
    timed = rounds[-1]
    return {
        "round_s": timed["round_s"],
        "startup_s": wall - sum(r["round_s"] + r["eval_s"] for r in rounds),
        "round_trip_s_mean": timed["round_trip_s"] / timed["train_messages"],
        "train_messages": timed["train_messages"],
        "wire_bytes": timed["bytes_up"] + timed["bytes_down"],
        "wire_bytes_activations": timed["bytes_up_activations"],
        "peak_rss_client_mb": timed.get("client_peak_rss_mb"),
        "peak_rss_server_mb": timed.get("server_peak_rss_mb"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batches", type=int, default=30, help="batches per client per round")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "home") as link:
        for strategy in ("dsl", "csl"):
            refs, runs = [], []
            for repeat in range(args.repeats):
                seconds, raw = reference_epoch(strategy, data_dir, args.batches)
                refs.append(seconds)
                runs.append(flower_run(link, strategy, data_dir, args.batches, Path(tmp), f"{strategy}-{repeat}"))
                print(f"{strategy} repeat {repeat + 1}/{args.repeats}: reference {seconds:.1f} s, flower {runs[-1]['round_s']:.1f} s", flush=True)
            reference = statistics.median(refs)
            flower = statistics.median(r["round_s"] for r in runs)
            raw_bytes = raw * (2 if strategy == "csl" else 1)
            rows.append(
                {
                    "strategy": strategy,
                    "reference_s": reference,
                    "flower_round_s": flower,
                    "ratio": flower / reference,
                    "flower_startup_s": statistics.median(r["startup_s"] for r in runs),
                    "round_trip_s_mean": statistics.median(r["round_trip_s_mean"] for r in runs),
                    "train_messages": runs[0]["train_messages"],
                    "wire_over_raw_bytes": statistics.median(r["wire_bytes"] for r in runs) / raw_bytes,
                    "peak_rss_client_mb": max((r["peak_rss_client_mb"] or 0) for r in runs),
                    "peak_rss_server_mb": max((r["peak_rss_server_mb"] or 0) for r in runs),
                    "reference_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "batches_per_client": args.batches,
                    "repeats": args.repeats,
                }
            )
    print(write_results("bench", rows))


if __name__ == "__main__":
    main()
