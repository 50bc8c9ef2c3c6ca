"""Flower ServerApp: set up, run the rounds, write metrics and checkpoints, resume."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from flsplit import checkpoint, logstamp
from flsplit.aggregation import build_aggregator
from flsplit.config import ConfigError, RunConfig
from flsplit.device import Placement, set_deterministic
from flsplit.ledger import Ledger
from flsplit.optim import build_optimizer
from flsplit.protocol import HelloRequest
from flsplit.results import ResultsWriter, flower_run_dir
from flsplit.software import software
from flsplit.status import RunStatus
from flsplit.tracking import open_tracker
from strategies import ServerHalf, SplitStrategy, get_strategy, parse_config
from apps import fast_pull, rounds, simulation_runtime
from apps.mixed_cuts import check_cuts
from apps.stream_exchange import open_exchange

app = ServerApp()
logstamp.install()  # UTC time on flsplit's own log lines (flsplit/logstamp.py)

CHECKPOINT = "checkpoint.pt"
#: How long the ServerApp waits for ``min-clients`` nodes to connect.
NODE_WAIT_S = 120.0
# Keys that may change between a run and its resumption.
# A run moves between machines: its device, precision and determinism switch may change.
RESUMABLE_CHANGES = {"resume", "num-server-rounds", "message-timeout", "tensorboard", "progress", "device", "server-device", "amp", "deterministic", "eval-every", "keep-rounds", "record-gradient-batches"}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train for ``num-server-rounds`` rounds and write ``config.json``, ``metrics.jsonl`` and ``status.json``.

    ``status.json`` says whether the run is going, completed or failed (``flwr run`` exits 0
    either way); when the config cannot be read it goes to ``flower_run_dir(run id)``.
    """
    try:
        config = parse_config(context.run_config, from_flower=True)
        writer = ResultsWriter(config.results_dir, _run_name(config))
    except Exception as err:
        status = RunStatus(flower_run_dir(context.run_id), {"flower_run_id": context.run_id})
        log(INFO, "flsplit: no run folder (the run config cannot be used); status in %s", status.folder)
        _record_failure(status, err)
        raise
    log(INFO, "flsplit: run folder %s", writer.dir)
    facts = {"run_name": writer.dir.name, "run_dir": str(writer.dir), "flower_run_id": context.run_id, "num_server_rounds": config.num_server_rounds}
    status = RunStatus(writer.dir, facts).start()
    try:
        _train(grid, config, writer, status)
    except BaseException as err:
        _record_failure(status, err)
        raise
    status.complete()


def _record_failure(status: RunStatus, error: BaseException) -> None:
    """Mark the run failed; if even that cannot be written, say so and let the run's own error through."""
    try:
        status.fail(error, status.fields.get("round"))
    except OSError as err:
        log(WARNING, "flsplit: cannot write %s: %s", status.path, err)


def _train(grid: Grid, config: RunConfig, writer: ResultsWriter, status: RunStatus) -> None:
    """Set up the server and the clients, then run (or continue) the rounds, keeping ``status`` current."""
    if simulation_runtime.in_simulation_runtime():
        simulation_runtime.match_worker_priority()  # opt-in; before the first computation (see the module)
    else:
        _shorten_pull_retries()
    strategy = get_strategy(config.strategy)
    server = build_server(config, strategy)
    ledger = Ledger()
    restored = _resume(config, writer, server, ledger) if config.resume else None
    first_round = restored["round"] + 1 if restored else 1
    history: list[dict[str, Any]] = restored["metrics"] if restored else []
    if restored:
        status.update(resumed_from_round=restored["round"], rounds_completed=restored["round"], failed_client_rounds=_failed_client_rounds(history))

    node_ids = _wait_for_nodes(grid, config)
    index = {n: i for i, n in enumerate(node_ids)}
    busy = lambda: server.watch.total  # noqa: E731 - the server's compute so far, for comm_s
    with open_exchange(grid, ledger, index, config, busy) as exchange:
        greeting = HelloRequest(str(writer.dir / "clients"), restore_round=first_round - 1 if restored else None)
        clients = rounds.hello(exchange, node_ids, greeting, config)
        check_cuts(clients, config, strategy)
        server.attach_run(writer.dir, {c.index: c.partition_id for c in clients})
        if not restored:
            writer.write_config(config.as_run_config() | _run_facts(config, clients))
        _warn_on_other_software(clients)
        log(INFO, "flsplit: %s on %d clients, rounds %d..%d; results in %s", config.strategy, len(clients), first_round, config.num_server_rounds, writer.dir)
        tracker = open_tracker(config.tensorboard, writer.dir)  # run tracking (flsplit/tracking.py)
        driver = rounds.RoundDriver(exchange, server, strategy, clients, config, build_aggregator(config.aggregation), tracker)
        for round_number in range(first_round, config.num_server_rounds + 1):
            status.update(round=round_number)
            metrics = driver.run_round(round_number)
            history.append(metrics)
            _checkpoint(writer, server, ledger, driver.aggregated, round_number, history)
            if config.keeps_round(round_number):  # for flsplit leak (docs/privacy.md)
                checkpoint.keep_copy(writer.dir / CHECKPOINT, checkpoint.kept_server_checkpoint_path(writer.dir, round_number))
            writer.append(metrics)
            tracker.log(metrics)
            status.update(rounds_completed=round_number, failed_client_rounds=_failed_client_rounds(history))
            log(INFO, "%s", rounds.round_line(metrics, config.num_server_rounds))
        tracker.close()
    log(INFO, "flsplit: done; metrics in %s", writer.metrics_path)


def build_server(config: RunConfig, strategy: type[SplitStrategy]) -> ServerHalf:
    """The strategy's server half, its top slice on ``server-device`` (fails at start-up if absent).

    The top starts after the shallowest cut the run declares, so it serves every client's depth.
    """
    set_deterministic(config.deterministic)
    placement = Placement.of(config.server_device_name, config.amp, "server-device" if config.server_device else "device")
    if config.shallowest_cut_blocks != config.cut_blocks:
        config = config.with_cut(str(config.shallowest_cut_blocks))
    top = strategy.server_slice(config).to(placement.device)  # on the device first, then the optimizer over its parameters
    return strategy.server(top, build_optimizer(list(top.parameters()), config), config)


def _run_facts(config: RunConfig, clients: list[rounds.Client]) -> dict[str, Any]:
    """What ``config.json`` records beside the run config: the federation, processes and versions."""
    processes = {
        "server_nice": os.getpriority(os.PRIO_PROCESS, 0),
        "server_threads": torch.get_num_threads(),
        "client_nice": [c.nice for c in clients],
        "client_threads": [c.threads for c in clients],
        "simulation_pickup": simulation_runtime.pickup_mode(),
    }
    clients_software = [c.software for c in clients]
    strategy = get_strategy(config.strategy)  # the keys may be empty: what they resolved to (refused here if contradictory)
    protocol = {
        "client_sync": strategy.sync_of(config), "serving_order": strategy.order_of(config), "transport": config.transport,
        "topology": strategy.topology,
    }
    cuts = {"cut_blocks": config.cut_blocks, "client_cut_blocks": [c.cut_blocks for c in clients]}
    # A simulated slow device is a sleep of (s - 1) x its measured compute (flsplit.slowdown): every result says so.
    slowdowns = {"client_slowdowns": [c.slowdown for c in clients], "slowdown_simulation": "sleep (s-1) x measured compute" if any(c.slowdown > 1 for c in clients) else "none"}
    facts = {"num_clients": len(clients), **cuts, "processes": processes, "client_software": clients_software} | slowdowns
    return facts | protocol | software()


def _warn_on_other_software(clients: list[rounds.Client]) -> None:
    """Warn when a ClientApp runs other versions than the ServerApp (another virtualenv's SuperNode)."""
    mine = software()
    for client in clients:
        differs = sorted(k for k in ("flsplit_version", "flwr_version", "torch_version") if client.software.get(k, mine[k]) != mine[k])
        if differs:
            theirs = ", ".join(f"{k} {client.software[k]} (server: {mine[k]})" for k in differs)
            log(WARNING, "flsplit: client %d runs other software than the server: %s; python %s", client.partition_id, theirs, client.software.get("python_executable"))


def _failed_client_rounds(history: list[dict[str, Any]]) -> int:
    """How many (client, round) pairs failed in the rounds so far."""
    return sum(len(metrics.get("failed_clients", [])) for metrics in history)


def _shorten_pull_retries() -> None:
    """Pull replies without Flower's 1 s first retry (``apps.fast_pull``); an optimisation, so only warn if it cannot."""
    try:
        log(INFO, "flsplit: reply pulls retry after %g s at first (apps.fast_pull)", fast_pull.apply())
    except (fast_pull.FlowerChangedError, ValueError) as err:
        log(WARNING, "flsplit: replies pulled with Flower's own retries: %s", err)


def _run_name(config: RunConfig) -> str:
    if config.run_name:
        return config.run_name
    if config.resume:
        raise ConfigError("invalid run config:\n  - run-name: resume=true needs the run-name of the run to continue")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{config.strategy}-{config.model}-cut{config.cut}-{stamp}"


def _wait_for_nodes(grid: Grid, config: RunConfig, timeout_s: float = NODE_WAIT_S) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= config.min_clients:
            return node_ids
        if time.monotonic() > deadline:
            raise RuntimeError(f"min-clients: only {len(node_ids)} of {config.min_clients} nodes connected in {timeout_s:.0f} s")
        time.sleep(1.0)


def _checkpoint(writer: ResultsWriter, server: ServerHalf, ledger: Ledger, weights: dict | None, round_number: int, history: list) -> None:
    """Everything the server needs to continue after ``round_number`` (clients keep their own)."""
    checkpoint.save_atomic(
        {
            "round": round_number,
            **server.state_dict(),
            "aggregated_slice": weights,
            "ledger": ledger.state(),
            "rng": checkpoint.rng_states(),
            "metrics": history,
        },
        writer.dir / CHECKPOINT,
    )


def changed_keys(config: RunConfig, saved: dict[str, Any]) -> list[str]:
    """Keys whose value differs from the checkpointed run's ``config.json`` and may not change.

    A key the checkpointed run did not record came with a later flsplit; at its default it
    changes nothing, so a run continues across an upgrade. A scheduled run keeps its length,
    because the learning-rate schedule spans its rounds.
    """
    resumable = RESUMABLE_CHANGES - ({"num-server-rounds"} if config.lr_schedule != "constant" else set())
    defaults = RunConfig().as_run_config() | (type(config.params)().model_dump(by_alias=True) if config.params else {})
    current = config.as_run_config()
    return sorted(k for k, v in current.items() if k not in resumable and saved.get(k, defaults.get(k)) != v)


def _resume(config: RunConfig, writer: ResultsWriter, server: ServerHalf, ledger: Ledger) -> dict[str, Any] | None:
    """Restore the server from its last checkpoint and rewrite ``metrics.jsonl`` to match it."""
    path = writer.dir / CHECKPOINT
    if not path.exists():
        log(WARNING, "resume: no checkpoint at %s; starting from round 1", path)
        return None
    saved_config = writer.read_config()
    changed = changed_keys(config, saved_config)
    if changed:
        raise ConfigError(
            "invalid run config:\n  - "
            + "\n  - ".join(f"{k}: {config.as_run_config()[k]!r} differs from the checkpointed run's {saved_config.get(k)!r}" for k in changed)
        )
    state = checkpoint.load(path, server.placement.device)  # onto this run's device, whichever wrote it
    server.load_state_dict(state)
    ledger.restore(state["ledger"])
    checkpoint.set_rng_states(state["rng"])
    writer.rewrite(state["metrics"])
    log(INFO, "resume: continuing %s after round %d", writer.dir.name, state["round"])
    return state
