"""Where a message's round trip goes on real SuperNodes, part by part, and DSL/CSL rounds against simulation.

For each setup, starts a SuperLink and two SuperNodes on 127.0.0.1 with ``FLSPLIT_TRACE_DIR``
set, runs one CSL round (resnet20, cut ``s``, synthetic data, ``--batch-size`` 128) and splits
every training message's round trip into the parts below from the stamps of the ServerApp
(``apps/exchange.py``), the ClientApp (``apps/client_app.py``) and the SuperNode's log
(``apps/fast_supernode.py`` copies it there), all ``time.time()`` on one host. Then it times a DSL round of
``--dsl-batches`` batches per client on the warm deployment and in simulation. Setups:

- ``cold``: ``apps.fast_supernode`` (short polls), a new ClientApp process per message;
- ``warm``: the same SuperNode in ``--isolation process`` beside ``apps.warm_superexec``;
- ``warm-sqlite``: the warm setup with the SuperLink's state in SQLite on disk (``--database``,
  as ``flwr run``'s local SuperLink keeps it) instead of in memory (Flower's default);
- ``default``: the cold setup with Flower's own waits (3 s idle, 0.5 s reply poll, 1 s task poll).

Writes ``experiments/results/deployment_latency.{json,md}``::

    python -m experiments.deployment_latency                   # cold and warm, ~10-12 min on 2 idle cores
    python -m experiments.deployment_latency --setups warm --csl-batches 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
from pathlib import Path

from experiments.tables import RESULTS, markdown_table
from flsplit import trace
from flsplit.launcher import SuperLink, SuperNode, run_config_text
from flsplit.results import read_metrics

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
    ("SuperLink to ServerApp pull", "node_sent", "server_pulled"),
)
IMPORTS, RUNTIME = PARTS[4][0], PARTS[3][0]
_LOG = re.compile(r"^(\d+\.\d+) \w+ (Receiving: [\w.]+ message \(ID: (\w+)\)|Runtime\.PullTaskInput|Sending: |Sent successfully)")
#: setup -> (SuperNode options, SuperNode environment, SuperLink state in SQLite on disk)
SETUPS: dict[str, tuple[dict[str, bool], dict[str, str], bool]] = {
    "cold": ({"fast": True}, {}, False),
    "warm": ({"warm": True}, {}, False),
    "warm-sqlite": ({"warm": True}, {}, True),
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
    found = []
    for trace_dir in node_dirs:
        node = supernode_stamps(trace_dir)
        for client in trace.read(trace_dir, "clientapp"):
            mid = client["message_id"]
            if mid not in pushes or mid not in pulls or len(node.get(mid, {})) < 4:
                continue
            app_start = max(client["import_started"], node[mid]["task_input_pulled"])  # preloaded: no import in the task
            found.append({
                "push_started": pushes[mid]["started"], **node[mid],
                "process_started": client["process_started"], "app_import_started": app_start,
                "app_imported": max(client["imported"], app_start), "entered": client["entered"],
                "ready": client["ready"], "replied": client["t"], "server_pulled": pulls[mid],
            })
    return found


def parts_of(stamps: dict[str, float]) -> dict[str, float]:
    """One message's parts in milliseconds (the app imports taken out of the runtime part)."""
    parts = {name: 1000 * (stamps[end] - stamps[start]) for name, start, end in PARTS}
    parts[RUNTIME] -= parts[IMPORTS]
    parts["round trip (ServerApp push to pull)"] = 1000 * (stamps["server_pulled"] - stamps["push_started"])
    return parts


def breakdown(stamps: list[dict[str, float]]) -> dict[str, float]:
    """Median milliseconds of every part, and of the whole round trip."""
    per_message = [parts_of(s) for s in stamps]
    return {name: statistics.median(p[name] for p in per_message) for name in per_message[0]}


def _config(strategy: str, batches: int, batch_size: int, work: Path, name: str) -> str:
    return run_config_text({
        "strategy": strategy, "dataset": "synthetic", "model": "resnet20", "cut": "s", "num-server-rounds": 2,
        "max-batches": batches, "batch-size": batch_size, "eval-samples": 64, "min-clients": 2,
        "results-dir": str(work), "run-name": name,
    })


def deployment_run(setup: str, strategy: str, batches: int, batch_size: int, work: Path) -> tuple[dict, list[dict[str, float]]]:
    """Two rounds on a fresh traced deployment: the second round's metrics, and every message's stamps."""
    name = f"{setup}-{strategy}"
    home = work / name
    server_dir = home / "trace-server"
    server_dir.mkdir(parents=True)
    options, node_env, on_disk = SETUPS[setup]
    database = home / "state.db" if on_disk else None
    with SuperLink(home, simulation=False, env={trace.TRACE_ENV: str(server_dir)}, database=database) as link:
        nodes = []
        try:
            for i in range(2):
                node_dir = home / f"trace-node{i}"
                node_dir.mkdir()
                env = node_env | {trace.TRACE_ENV: str(node_dir)}
                nodes.append(SuperNode(link, f"node{i}", f"partition-id={i} num-partitions=2", env=env, **options))
            done = link.run(_config(strategy, batches, batch_size, work, name), timeout_s=3600)
        finally:
            for node in nodes:
                node.stop()
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    stamps = journeys(server_dir, [home / f"trace-node{i}" for i in range(2)])
    return read_metrics(work / name / "metrics.jsonl")[-1], stamps


def simulation_run(strategy: str, batches: int, batch_size: int, work: Path) -> dict:
    """The same two rounds in the simulation engine (2 virtual SuperNodes, 1 CPU each)."""
    name = f"simulation-{strategy}"
    with SuperLink(work / name, simulation=True) as link:
        done = link.run(_config(strategy, batches, batch_size, work, name), num_supernodes=2, timeout_s=3600)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    return read_metrics(work / name / "metrics.jsonl")[-1]


def _round_row(engine: str, strategy: str, batches: int, last: dict) -> dict:
    return {
        "engine": engine, "strategy": strategy, "batches_per_client": batches, "train_messages": last["train_messages"],
        "round_s": round(last["round_s"], 2), "round_trip_s_mean": round(last["round_trip_s"] / last["train_messages"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="cold,warm", help=f"comma-separated, of {sorted(SETUPS)}")
    parser.add_argument("--csl-batches", type=int, default=10, help="CSL batches per client per round (2 clients: 2x+2 messages)")
    parser.add_argument("--dsl-batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--no-simulation", action="store_true", help="skip the DSL round in simulation")
    parser.add_argument("--note", default="", help="free text kept in the conditions, e.g. 'quiet machine'")
    args = parser.parse_args()
    setups = [s.strip() for s in args.setups.split(",")]
    unknown = sorted(set(setups) - set(SETUPS))
    if unknown:
        parser.error(f"--setups: unknown {unknown}; choose from {sorted(SETUPS)}")
    parts: dict[str, dict[str, float]] = {}
    rounds, counts = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for setup in setups:
            last, stamps = deployment_run(setup, "csl", args.csl_batches, args.batch_size, work)
            if not stamps:
                raise SystemExit(f"{setup}: no message was stamped by all components; see {work}")
            parts[setup], counts[setup] = breakdown(stamps), len(stamps)
            rounds.append(_round_row(f"deployment ({setup})", "csl", args.csl_batches, last))
            print(setup, json.dumps(parts[setup], indent=1), flush=True)
        dsl_setup = "warm" if "warm" in setups else setups[-1]
        rounds.append(_round_row(f"deployment ({dsl_setup})", "dsl", args.dsl_batches, deployment_run(dsl_setup, "dsl", args.dsl_batches, args.batch_size, work)[0]))
        if not args.no_simulation:
            rounds.append(_round_row("simulation", "dsl", args.dsl_batches, simulation_run("dsl", args.dsl_batches, args.batch_size, work)))
    conditions = {
        "note": args.note,
        "host": platform.node(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "poll_env": {k: os.environ.get(k, "launcher default") for k in ("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "FLSPLIT_SUPERNODE_IDLE_S", "FLSPLIT_SUPERNODE_REPLY_POLL_S")},
        "csl": f"resnet20 cut s, synthetic, batch {args.batch_size}, {args.csl_batches} batches per client, 2 SuperNodes on 127.0.0.1",
        "messages_per_setup": counts,
    }
    table_rows = [{"part (median ms)": name, **{setup: round(parts[setup][name], 1) for setup in setups}} for name in parts[setups[0]]]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deployment_latency.json").write_text(json.dumps({"conditions": conditions, "breakdown_ms": parts, "rounds": rounds}, indent=2))
    text = f"Conditions: {json.dumps(conditions)}\n\n{markdown_table(table_rows)}\n\n{markdown_table(rounds)}"
    (RESULTS / "deployment_latency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
