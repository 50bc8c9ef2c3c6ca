"""Where a message's round trip goes on real SuperNodes, part by part, and DSL/CSL rounds against simulation.

For each setup, starts a SuperLink and two SuperNodes on 127.0.0.1 with ``FLSPLIT_TRACE_DIR``
set, runs one CSL round (resnet20, cut ``s``, synthetic data or CIFAR-10 with ``--data-dir``, ``--batch-size`` 128) and splits
every training message's round trip into the parts below from the stamps of the ServerApp
(``apps/exchange.py``), the ClientApp (``apps/client_app.py``) and the SuperNode's log
(``apps/fast_supernode.py`` copies it there), all ``time.time()`` on one host. Then it times a DSL round of
``--dsl-batches`` batches per client on each of ``--dsl-setups`` and in simulation. Setups:

- ``cold``: ``apps.fast_supernode`` (short polls), a new ClientApp process per message;
- ``warm``: the same SuperNode in ``--isolation process`` beside ``apps.warm_superexec``;
- ``warm-sqlite``: the warm setup with the SuperLink's state in SQLite on disk (``--database``,
  as ``flwr run``'s local SuperLink keeps it) instead of in memory (Flower's default);
- ``warm-1thread``: the warm setup with one torch thread per SuperNode (``OMP_NUM_THREADS=1``), as
  the simulation engine gives each virtual SuperNode of 1 CPU: two SuperNodes and the ServerApp
  on one 2-core host otherwise run 2 threads each;
- ``warm-1thread-nice15``: that, with the SuperNodes at nice 15 under the ServerApp, as Ray runs
  the simulation's clients;
- ``warm-1thread-flwr-pull``: ``warm-1thread`` with Flower's own first retry of 1 s when a
  pulled message's objects have not all arrived (``apps.fast_pull`` off, on every party);
- ``default``: the cold setup with Flower's own waits (3 s idle, 0.5 s reply poll, 1 s task poll).

Every setup also reports the per-batch CSL **overhead** from the ServerApp's own clock: each
upload's round trip minus the larger of the client's handler time and the server's compute
while it was out (the rule ``comm_s`` uses), median over the round's uploads. With
``--stream-setups`` the same CSL round also runs on ``transport = "stream"`` (TLS on, the data
plane's default on SuperNodes) with each of ``--stream-clients`` SuperNodes, where a round is
one Flower message and the batches are frames; the message breakdown does not apply there.

Writes ``experiments/results/deployment_latency.{json,md}`` (``--name`` renames)::

    python -m experiments.deployment_latency                   # cold and warm, ~10-12 min on 2 idle cores
    python -m experiments.deployment_latency --setups warm --csl-batches 20
    python -m experiments.deployment_latency --setups warm,warm-1thread --dsl-setups warm,warm-1thread
    python -m experiments.deployment_latency --setups warm-1thread --dsl-setups warm-1thread --stream-setups warm-1thread
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from experiments import federations
from experiments.tables import RESULTS, markdown_table
from flsplit import trace
from flsplit.launcher import run_config_text
from apps import fast_pull

#: (part, the stamps it runs between), in order; "app imports" is cut out of the runtime part.
PARTS = (
    ("ServerApp push, SuperLink, SuperNode pull (idle wait)", "push_started", "node_received"),
    ("task created, SuperExec task poll, process start (exec or fork)", "node_received", "process_started"),
    ("task process start to its first Runtime API call (interpreter, flwr import)", "process_started", "task_input_pulled"),
    ("task input, context and message pull, FAB install, app load", "task_input_pulled", "entered"),
    ("app imports (torch, flsplit; 0 when preloaded)", "app_import_started", "app_imported"),
    ("state restore (handler entry to ready to train)", "entered", "ready"),
    ("handler: train, save state, encode", "ready", "replied"),
    ("reply push to SuperNode, SuperNode reply poll", "replied", "node_sending"),
    ("SuperNode push to SuperLink", "node_sending", "node_sent"),
    ("reply held in the SuperLink while the ServerApp is busy (the other client)", "node_sent", "server_waiting"),
    ("SuperLink to ServerApp pull (transfer, poll, object-pull retries)", "server_waiting", "server_pulled"),
)
IMPORTS, RUNTIME = PARTS[4][0], PARTS[3][0]
_LOG = re.compile(r"^(\d+\.\d+) \w+ (Receiving: [\w.]+ message \(ID: (\w+)\)|Runtime\.PullTaskInput|Sending: |Sent successfully)")
#: setup -> (SuperNode options, SuperNode environment, SuperLink state in SQLite on disk)
SETUPS: dict[str, tuple[dict[str, bool | int], dict[str, str], bool]] = {
    "cold": ({"fast": True}, {}, False),
    "warm": ({"warm": True}, {}, False),
    "warm-sqlite": ({"warm": True}, {}, True),
    "warm-1thread": ({"warm": True}, {"OMP_NUM_THREADS": "1"}, False),
    "warm-1thread-nice15": ({"warm": True, "nice": 15}, {"OMP_NUM_THREADS": "1"}, False),
    "warm-1thread-flwr-pull": ({"warm": True}, {"OMP_NUM_THREADS": "1", fast_pull.BACKOFF_ENV: str(fast_pull.FLWR_INITIAL_BACKOFF_S)}, False),
    "default": ({"fast": True}, {"FLSPLIT_SUPERNODE_IDLE_S": "3", "FLSPLIT_SUPERNODE_REPLY_POLL_S": "0.5", "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "1"}, False),
}


def supernode_stamps(trace_dir: Path) -> dict[str, dict[str, float]]:
    """message id -> when its SuperNode pulled it, its task first called, and the reply went out.

    A SuperNode handles one message at a time, so each stamp belongs to the last message received.
    """
    stamps: dict[str, dict[str, float]] = {}
    current: dict[str, float] = {}
    lines = [line for log in sorted(trace_dir.glob("supernode-*.log")) for line in log.read_text(errors="replace").splitlines()]
    for line in lines:
        match = _LOG.match(line)
        if not match:
            continue
        t, what, message_id = float(match[1]), match[2], match[3]
        if message_id:
            current = stamps.setdefault(message_id, {"node_received": t})
        elif what.startswith("Runtime"):
            current.setdefault("task_input_pulled", t)
        elif what.startswith("Sending"):
            current.setdefault("node_sending", t)
        else:
            current.setdefault("node_sent", t)
    return stamps


def journeys(server_dir: Path, node_dirs: list[Path]) -> list[dict[str, float]]:
    """One dict of stamps per training message that every component stamped."""
    pushes = {r["message_id"]: r for r in trace.read(server_dir, "server_push")}
    pulls = {r["message_id"]: r["t"] for r in trace.read(server_dir, "server_pull")}
    waits = {r["message_id"]: r["t"] for r in trace.read(server_dir, "server_wait")}
    found = []
    for trace_dir in node_dirs:
        node = supernode_stamps(trace_dir)
        for client in trace.read(trace_dir, "clientapp"):
            mid = client["message_id"]
            if mid not in pushes or mid not in pulls or mid not in waits or len(node.get(mid, {})) < 4:
                continue
            app_start = max(client["import_started"], node[mid]["task_input_pulled"])  # preloaded: no import in the task
            found.append({
                "push_started": pushes[mid]["started"], **node[mid],
                "process_started": client["process_started"], "app_import_started": app_start,
                "app_imported": max(client["imported"], app_start), "entered": client["entered"],
                "ready": client["ready"], "replied": client["t"], "server_pulled": pulls[mid],
                # the ServerApp turns to this reply once it is in the SuperLink and the server waits for it
                "server_waiting": max(waits[mid], node[mid]["node_sent"]),
            })
    return found


def parts_of(stamps: dict[str, float]) -> dict[str, float]:
    """One message's parts in milliseconds (the app imports taken out of the runtime part)."""
    parts = {name: 1000 * (stamps[end] - stamps[start]) for name, start, end in PARTS}
    parts[RUNTIME] -= parts[IMPORTS]
    parts["round trip (ServerApp push to pull)"] = 1000 * (stamps["server_pulled"] - stamps["push_started"])
    return parts


def breakdown(per_message: list[dict[str, float]], average: Callable[[list[float]], float]) -> dict[str, float]:
    """``average`` (median or mean) milliseconds of every part, and of the whole round trip.

    Medians resist outliers but do not add up when a part is bimodal (a reply the server
    turns to at once, or one held while it serves the other client); means add up.
    """
    return {name: average([p[name] for p in per_message]) for name in per_message[0]}


def per_batch_overhead(server_dir: Path) -> dict[str, float]:
    """Median per-upload round trip and overhead (ms) of the traced run, from the ServerApp's clock.

    Overhead = round trip − max(client handler, server busy while the request was out), the
    rule ``comm_s`` sums; both rounds' uploads count (the second round's are warm).
    """
    uploads = trace.read(server_dir, "upload")
    trips = [1000 * u["round_trip_s"] for u in uploads]
    overheads = [1000 * max(0.0, u["round_trip_s"] - max(u["handler_s"], u["server_busy_s"])) for u in uploads]
    return {
        "uploads": len(uploads),
        "round_trip_ms_median": round(statistics.median(trips), 1),
        "overhead_ms_median": round(statistics.median(overheads), 1),
        "overhead_ms_mean": round(statistics.mean(overheads), 1),
        "handler_ms_median": round(statistics.median(1000 * u["handler_s"] for u in uploads), 1),
    }


def _config(strategy: str, batches: int, batch_size: int, work: Path, name: str, data: dict[str, str], clients: int = 2, transport: str = "messages") -> str:
    return run_config_text({
        **data, "model": "resnet20", "cut": "s", "strategy": strategy, "num-server-rounds": 2,
        "max-batches": batches, "batch-size": batch_size, "eval-samples": 64, "min-clients": clients,
        "results-dir": str(work), "run-name": name, "transport": transport, "stream-tls": "on",
    })


def deployment_run(
    setup: str, strategy: str, batches: int, batch_size: int, work: Path, data: dict[str, str], clients: int = 2, transport: str = "messages"
) -> tuple[dict, list[dict[str, float]], dict[str, float]]:
    """Two rounds on a fresh traced deployment: the second round's metrics, every message's
    stamps, and the per-batch overhead."""
    name = f"{setup}-{strategy}" + ("" if transport == "messages" else f"-{transport}-{clients}clients")
    home = work / name
    server_dir = home / "trace-server"
    node_dirs = [home / f"trace-node{i}" for i in range(clients)]
    for folder in (server_dir, *node_dirs):
        folder.mkdir(parents=True)
    options, node_env, on_disk = SETUPS[setup]
    metrics = federations.on_supernodes(
        home, _config(strategy, batches, batch_size, work, name, data, clients, transport), work / name / "metrics.jsonl", timeout_s=3600,
        node_env=node_env, node_env_of={i: {trace.TRACE_ENV: str(d)} for i, d in enumerate(node_dirs)},
        # the pull backoff is the ServerApp's too (it runs in the SuperLink's environment)
        link_env={trace.TRACE_ENV: str(server_dir)} | {k: v for k, v in node_env.items() if k == fast_pull.BACKOFF_ENV},
        database=home / "state.db" if on_disk else None, num_nodes=clients, **options,
    )
    return metrics[-1], journeys(server_dir, node_dirs), per_batch_overhead(server_dir)


def simulation_run(strategy: str, batches: int, batch_size: int, work: Path, data: dict[str, str]) -> dict:
    """The same two rounds in the simulation engine (2 virtual SuperNodes, 1 CPU each)."""
    name = f"simulation-{strategy}"
    return federations.in_simulation(work / name, _config(strategy, batches, batch_size, work, name, data), work / name / "metrics.jsonl", 3600)[-1]


def _round_row(engine: str, strategy: str, batches: int, batch_size: int, last: dict, transport: str = "messages", clients: int = 2) -> dict:
    return {
        # max-batches caps a client's round; a small data set (synthetic: 1,024 images) may end it sooner
        "engine": engine, "transport": transport, "clients": clients, "strategy": strategy, "max_batches": batches,
        "batches_per_client": round(last["train_samples"] / clients / batch_size),
        "uploads": last["train_messages"], "round_s": round(last["round_s"], 2), "eval_s": round(last["eval_s"], 2),
        "round_trip_s_mean": round(last["round_trip_s"] / last["train_messages"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="cold,warm", help=f"comma-separated, of {sorted(SETUPS)}")
    parser.add_argument("--csl-batches", type=int, default=10, help="CSL batches per client per round (2 clients: 2x+2 messages)")
    parser.add_argument("--dsl-batches", type=int, default=6)
    parser.add_argument("--dsl-setups", default="warm", help="comma-separated setups to time the DSL round on")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--stream-setups", default="", help="comma-separated setups to time the CSL round on with transport='stream' (TLS on)")
    parser.add_argument("--stream-clients", default="1,2", help="comma-separated SuperNode counts for the stream rows")
    parser.add_argument("--data-dir", type=Path, default=None, help="CIFAR-10 here (cifar10-jpeg.tar.gz) instead of the synthetic set, whose 1,024 images end a round after 4 batches per client")
    parser.add_argument("--no-simulation", action="store_true", help="skip the DSL round in simulation")
    parser.add_argument("--note", default="", help="free text kept in the conditions, e.g. 'quiet machine'")
    parser.add_argument("--name", default="deployment_latency", help="results file stem under experiments/results")
    args = parser.parse_args()
    setups = [s.strip() for s in args.setups.split(",")]
    dsl_setups = [s.strip() for s in args.dsl_setups.split(",") if s.strip()]
    stream_setups = [s.strip() for s in args.stream_setups.split(",") if s.strip()]
    stream_clients = [int(n) for n in args.stream_clients.split(",") if n.strip()]
    for option, chosen in (("--setups", setups), ("--dsl-setups", dsl_setups), ("--stream-setups", stream_setups)):
        unknown = sorted(set(chosen) - set(SETUPS))
        if unknown:
            parser.error(f"{option}: unknown {unknown}; choose from {sorted(SETUPS)}")
        if len(set(chosen)) < len(chosen):
            parser.error(f"{option}: each setup once, got {chosen}")
    parts: dict[str, dict[str, float]] = {}
    means: dict[str, dict[str, float]] = {}
    per_message: dict[str, list[dict[str, float]]] = {}
    rounds, counts, overheads = [], {}, []
    data = {"dataset": "cifar10", "data-dir": str(args.data_dir.resolve())} if args.data_dir else {"dataset": "synthetic"}
    work = Path(tempfile.mkdtemp(prefix="deployment-latency-"))  # kept: the runs' logs and traces
    print(f"runs in {work}", flush=True)
    for setup in setups:
        last, stamps, overhead = deployment_run(setup, "csl", args.csl_batches, args.batch_size, work, data)
        overheads.append({"setup": setup, "transport": "messages", "clients": 2, **overhead})
        if not stamps:
            raise SystemExit(f"{setup}: no message was stamped by all components; see {work}")
        per_message[setup] = [parts_of(s) for s in stamps]
        parts[setup], means[setup] = breakdown(per_message[setup], statistics.median), breakdown(per_message[setup], statistics.mean)
        counts[setup] = len(stamps)
        rounds.append(_round_row(f"deployment ({setup})", "csl", args.csl_batches, args.batch_size, last))
        print(setup, json.dumps(parts[setup], indent=1), flush=True)
    for stream_setup in stream_setups:
        for clients in stream_clients:
            last, _, overhead = deployment_run(stream_setup, "csl", args.csl_batches, args.batch_size, work, data, clients, "stream")
            overheads.append({"setup": stream_setup, "transport": "stream (TLS)", "clients": clients, **overhead})
            rounds.append(_round_row(f"deployment ({stream_setup})", "csl", args.csl_batches, args.batch_size, last, "stream (TLS)", clients))
            print(json.dumps(overheads[-1]), flush=True)
    for dsl_setup in dsl_setups:
        last = deployment_run(dsl_setup, "dsl", args.dsl_batches, args.batch_size, work, data)[0]
        rounds.append(_round_row(f"deployment ({dsl_setup})", "dsl", args.dsl_batches, args.batch_size, last))
        for stream_setup in (s for s in stream_setups if s == dsl_setup):
            last = deployment_run(stream_setup, "dsl", args.dsl_batches, args.batch_size, work, data, 2, "stream")[0]
            rounds.append(_round_row(f"deployment ({stream_setup})", "dsl", args.dsl_batches, args.batch_size, last, "stream (TLS)"))
    if not args.no_simulation:
        rounds.append(_round_row("simulation", "dsl", args.dsl_batches, args.batch_size, simulation_run("dsl", args.dsl_batches, args.batch_size, work, data)))
    conditions = {
        "note": args.note,
        "host": platform.node(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "poll_env": {k: os.environ.get(k, "launcher default") for k in ("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "FLSPLIT_SUPERNODE_IDLE_S", "FLSPLIT_SUPERNODE_REPLY_POLL_S")},
        "csl": f"resnet20 cut s, {data['dataset']}, batch {args.batch_size}, {args.csl_batches} batches per client, 2 SuperNodes on 127.0.0.1",
        "messages_per_setup": counts,
    }
    table_rows = [
        {"part (ms)": name, **{f"{setup} {kind}": round(of[setup][name], 1) for setup in setups for kind, of in (("median", parts), ("mean", means))}}
        for name in parts[setups[0]]
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({
        "conditions": conditions, "breakdown_ms": parts, "mean_ms": means, "per_message_ms": per_message,
        "per_batch_overhead": overheads, "rounds": rounds,
    }, indent=2))
    text = (
        f"Conditions: {json.dumps(conditions)}\n\nWhere a training message's round trip goes (messages transport):\n\n{markdown_table(table_rows)}"
        f"\n\nPer-batch CSL overhead (round trip − max(client handler, server busy)), both rounds' uploads:\n\n{markdown_table(overheads)}"
        f"\n\nRounds (the second round of each run):\n\n{markdown_table(rounds)}"
    )
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
