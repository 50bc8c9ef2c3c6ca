"""Side-by-side benchmark: flsplit through ``flwr run`` against a plain PyTorch loop.

In one run, on the same data and batches (resnet20, cut ``s``, CIFAR-10, 2 clients, IID, a fixed
number of batches per client), it measures:

- (a) the reference: one process, no messages, the same split computation (bottom slice,
  auxiliary head or server gradient, top slice) on the same batches in the same order, in the
  same precision (``amp``);
- (b) the same training through ``flwr run`` in the simulation engine, for DSL and CSL, in each
  of the ``VARIANTS``: Flower as it ships, each of ``apps.simulation_runtime``'s fixes
  added in turn, bf16 autocast, two CPUs per client, smaller and larger DSL chunks;

and reports b/a per row, CSL's per-batch round trip, wire bytes against raw tensor bytes, peak
RSS per process, and where the time above the reference goes, in seconds per epoch (the
uncovered message wait ``comm_s``, the server's compute, the clients' compute). Flower's fixed
start-up (SuperLink, Ray, first data load) is excluded from the per-round figure: round 1 warms
up, round 2 is timed, and the start-up is reported on its own. Medians over ``--repeats``, the
rows of one repeat run back to back. Writes ``experiments/results/bench.json`` and ``bench.md``.

    python -m experiments.bench --data-dir ../shared/data      # about 30 minutes on 2 cores
    python -m experiments.bench --data-dir ../shared/data --only 'pickup on push' --only stream --name bench_transport
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
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
#: Batches of 128 one client trains on in a CIFAR-10 epoch split over ``CLIENTS`` (for per-epoch figures).
EPOCH_BATCHES_PER_CLIENT = 50_000 // CLIENTS / 128
FLOWER_AS_SHIPPED = {"FLSPLIT_SIMULATION_PICKUP": "poll"}
EQUAL_PRIORITY = {"FLSPLIT_SERVER_PRIORITY": "match-workers"}


@dataclass(frozen=True)
class Variant:
    """One row: a strategy, the SuperLink's environment, and run-config keys beyond the shared ones."""

    setup: str
    strategy: str
    env: dict[str, str] = field(default_factory=dict)
    keys: dict[str, object] = field(default_factory=dict)
    cpus_per_client: int = 1

    @property
    def amp(self) -> str:
        return str(self.keys.get("amp", "off"))


VARIANTS = [
    *(Variant("flower 1.41 as shipped (poll 0.1 s, server nice 0)", s, FLOWER_AS_SHIPPED) for s in ("dsl", "csl")),
    *(Variant("+ pickup on push (flsplit default)", s) for s in ("dsl", "csl")),
    *(Variant("+ equal priority (opt-in)", s, EQUAL_PRIORITY) for s in ("dsl", "csl")),
    *(Variant("default, amp bf16", s, keys={"amp": "bf16"}) for s in ("dsl", "csl")),
    Variant("default, 2 CPUs per client", "csl", cpus_per_client=2),
    Variant("default, chunk-mb 16", "dsl", keys={"chunk-mb": 16}),
    Variant("default, chunk-mb 256", "dsl", keys={"chunk-mb": 256}),
    *(Variant("transport stream (data plane, loopback TCP)", s, keys={"transport": "stream"}) for s in ("dsl", "csl")),
    # What apps.simulation_runtime still buys once per-batch traffic has left the messages.
    *(Variant("transport stream, flower as shipped (poll 0.1 s)", s, FLOWER_AS_SHIPPED, keys={"transport": "stream"}) for s in ("dsl", "csl")),
]


def reference_epoch(strategy: str, data_dir: str, batches: int, amp: str = "off") -> tuple[float, int]:
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
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()
    started = time.perf_counter()
    for step in range(batches):
        for (bottom, aux, opt), loader in zip(clients, loaders):
            x, y = loader.batch(step)
            with autocast:
                z = bottom(x)
            raw += z.numel() * 4
            if strategy == "dsl":
                opt.zero_grad()
                with autocast:
                    loss = F.cross_entropy(aux(z), y)
                loss.backward()
                opt.step()
                z = z.detach()
            else:
                z_server = z.detach().float().requires_grad_()  # fp32 on the wire, as flsplit sends it
            z_in = z.float() if strategy == "dsl" else z_server
            top_opt.zero_grad()
            with autocast:
                loss = F.cross_entropy(top(z_in), y)
            loss.backward()
            top_opt.step()
            if strategy == "csl":
                opt.zero_grad()
                z.backward(z_server.grad)
                opt.step()
    return time.perf_counter() - started, raw


def flower_run(link: SuperLink, variant: Variant, data_dir: str, batches: int, work: Path, name: str) -> dict:
    """Two rounds through ``flwr run``; timing of round 2 and the whole run's wall clock."""
    keys = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in variant.keys.items())
    started = time.perf_counter()
    done = link.run(
        f"strategy='{variant.strategy}' model='resnet20' dataset='cifar10' data-dir='{data_dir}' num-server-rounds=2 "
        f"max-batches={batches} eval-samples=256 results-dir='{work}' run-name='{name}' {keys}",
        timeout_s=1800,
        cpus_per_client=variant.cpus_per_client,
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
        "comm_s": timed["comm_s"],
        "server_s": timed["server_s"],
        "client_s": timed["client_fwd_s"] + timed["client_bwd_s"],
        "wire_bytes": timed["bytes_up"] + timed["bytes_down"],
        "peak_rss_client_mb": timed.get("client_peak_rss_mb"),
        "peak_rss_server_mb": timed.get("server_peak_rss_mb"),
    }


def row(variant: Variant, reference: float, raw: int, runs: list[dict], batches: int) -> dict:
    """The table row of one variant: medians over repeats, and per-epoch seconds of its parts."""
    flower = statistics.median(r["round_s"] for r in runs)
    per_epoch = EPOCH_BATCHES_PER_CLIENT / batches
    return {
        "setup": variant.setup,
        "strategy": variant.strategy,
        "reference_s": reference,
        "flower_round_s": flower,
        "ratio": flower / reference,
        "over_reference_s_per_epoch": (flower - reference) * per_epoch,
        "comm_s_per_epoch": statistics.median(r["comm_s"] for r in runs) * per_epoch,
        "server_s_per_epoch": statistics.median(r["server_s"] for r in runs) * per_epoch,
        "client_s_per_epoch": statistics.median(r["client_s"] for r in runs) * per_epoch,
        "round_trip_s_mean": statistics.median(r["round_trip_s_mean"] for r in runs),
        "train_messages": runs[0]["train_messages"],
        "flower_startup_s": statistics.median(r["startup_s"] for r in runs),
        "wire_over_raw_bytes": statistics.median(r["wire_bytes"] for r in runs) / (raw * (2 if variant.strategy == "csl" else 1)),
        "peak_rss_client_mb": max((r["peak_rss_client_mb"] or 0) for r in runs),
        "peak_rss_server_mb": max((r["peak_rss_server_mb"] or 0) for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batches", type=int, default=30, help="batches per client per round")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", action="append", default=[], help="run only the setups containing this text (repeatable)")
    parser.add_argument("--name", default="bench", help="results file name under experiments/results (default: bench)")
    args = parser.parse_args()
    variants = [v for v in VARIANTS if not args.only or any(text in v.setup for text in args.only)]
    data_dir = str(Path(args.data_dir).resolve())
    torch.manual_seed(0)
    environments = {tuple(sorted(v.env.items())) for v in variants}
    references: dict[tuple[str, str], list[float]] = {}
    raw_bytes: dict[str, int] = {}
    runs: list[list[dict]] = [[] for _ in variants]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        links = {env: stack.enter_context(SuperLink(Path(tmp) / f"home-{i}", env=dict(env))) for i, env in enumerate(sorted(environments))}
        for repeat in range(args.repeats):
            for strategy, amp in sorted({(v.strategy, v.amp) for v in variants}):
                seconds, raw_bytes[strategy] = reference_epoch(strategy, data_dir, args.batches, amp)
                references.setdefault((strategy, amp), []).append(seconds)
                print(f"repeat {repeat + 1}/{args.repeats}: reference {strategy} amp {amp}: {seconds:.1f} s", flush=True)
            for i, variant in enumerate(variants):
                link = links[tuple(sorted(variant.env.items()))]
                runs[i].append(flower_run(link, variant, data_dir, args.batches, Path(tmp), f"v{i}-r{repeat}"))
                print(f"repeat {repeat + 1}/{args.repeats}: {variant.strategy} {variant.setup}: flower {runs[i][-1]['round_s']:.1f} s", flush=True)
    rows = [
        row(v, statistics.median(references[(v.strategy, v.amp)]), raw_bytes[v.strategy], runs[i], args.batches)
        for i, v in enumerate(variants)
    ]
    facts = {
        "batches_per_client": args.batches, "repeats": args.repeats, "clients": CLIENTS,
        "reference_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads_reference": torch.get_num_threads(),
    }
    print(write_results(args.name, rows, facts))


if __name__ == "__main__":
    main()
