"""The ``device``, ``amp`` and ``deterministic`` keys: resolution, errors, autocast, scalers, moves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from flsplit import checkpoint
from flsplit.config import ConfigError
from flsplit.device import DeviceUnavailable, Placement, resolve_device, set_deterministic
from flsplit.ledger import Ledger
from flsplit.memory import MemoryReading
from flsplit.results import ResultsWriter
from flsplit.split import build_halves
from flsplit.wire import Packet, encode, module_state
from tests.halves import drive_round, make_client, make_config, make_server, next_round
from strategies import get_strategy
from apps import client_state, server_app
from apps.rounds import RoundStats, UploadReport

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")


def _state(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [v.detach().cpu().clone() for m in modules for v in module_state(m).values()]


def _train(strategy: str, rounds: int = 1, **overrides: object) -> tuple:
    """Two-batch rounds of ``strategy`` through the codec; ``(client, server, uploads)``."""
    config = make_config(strategy=strategy, **overrides)
    _, top, _ = build_halves(config)
    client, server = make_client(config, strategy, steps=2), make_server(config, strategy, top)
    half = get_strategy(strategy).client(config)
    uploads = []
    for round_number in range(1, rounds + 1):
        if round_number > 1:
            next_round(client, 2)
        uploads += drive_round(half, server, client, round_number=round_number)[1]
    return client, server, uploads


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3", "mps"])
def test_device_key_accepts_every_documented_choice(device: str) -> None:
    # Execute
    config = make_config(device=device, **{"server-device": device})
    # Assert
    assert (config.device, config.server_device_name) == (device, device)


def test_server_device_defaults_to_the_device_key() -> None:
    # Execute
    config = make_config(device="cpu")
    # Assert
    assert (config.server_device, config.server_device_name) == ("", "cpu")


@pytest.mark.parametrize("key", ["device", "server-device"])
@pytest.mark.parametrize("value", ["gpu", "cuda0", "CUDA", "cuda:x", "tpu"])
def test_a_wrong_device_string_is_a_config_error_that_lists_the_choices(key: str, value: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as caught:
        make_config(**{key: value})
    # Assert
    message = str(caught.value)
    assert f"- {key}: unknown device '{value}'" in message
    for choice in ("auto", "cpu", "cuda", "cuda:N", "mps"):
        assert f"'{choice}'" in message


@pytest.mark.parametrize("key", ["device", "server-device"])
def test_fp16_with_a_cpu_device_is_a_config_error_that_says_why(key: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as caught:
        make_config(amp="fp16", **{key: "cpu"})
    # Assert
    message = str(caught.value)
    assert "- amp: 'fp16' needs CUDA" in message and f"{key} is 'cpu'" in message
    assert "gradient scaler" in message and "use amp = 'bf16'" in message


def test_bf16_with_a_cpu_device_and_fp16_with_cuda_are_accepted() -> None:
    # Execute
    bf16, fp16 = make_config(amp="bf16", device="cpu"), make_config(amp="fp16", device="cuda:1")
    # Assert
    assert (bf16.amp, fp16.amp) == ("bf16", "fp16")


def test_auto_resolves_to_cuda_then_mps_then_cpu() -> None:
    # Execute
    device = resolve_device("auto")
    # Assert
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif torch.backends.mps.is_available():
        assert device.type == "mps"
    else:
        assert device == torch.device("cpu")


@without_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_asked_for_without_cuda_fails_at_start_up_naming_the_key(device: str) -> None:
    # Prepare
    config = make_config(device=device)
    client_state.client_placement.cache_clear()
    # Execute / Assert: the ServerApp's and the ClientApp's start-up
    with pytest.raises(DeviceUnavailable, match=f"device: '{device}' was asked for, but this process sees no CUDA"):
        server_app.build_server(config, get_strategy("dsl"))
    with pytest.raises(DeviceUnavailable, match="client-resources-num-gpus"):
        client_state.client_placement(config.device, config.amp)


@without_cuda
def test_server_device_names_its_own_key_when_it_is_missing() -> None:
    # Prepare
    config = make_config(device="cpu", **{"server-device": "cuda"})
    # Execute / Assert
    with pytest.raises(DeviceUnavailable, match="server-device: 'cuda'"):
        server_app.build_server(config, get_strategy("dsl"))


@without_cuda
def test_fp16_where_auto_resolves_to_the_cpu_fails_at_start_up() -> None:
    # Execute / Assert (auto passes validation, since it may find a GPU)
    with pytest.raises(DeviceUnavailable, match="amp: 'fp16' needs CUDA.*resolved to cpu"):
        Placement.of("auto", "fp16")


OWN_KEYS = {"fsl-sage": {"align-epochs": 2, "upload-every": 1}, "hybrid": {"hybrid-k": 2}}


@pytest.mark.parametrize("strategy", ["dsl", "csl", "hybrid", "fsl-sage", "splitfed-v1"])
def test_bf16_autocast_trains_on_cpu_with_float32_activations_on_the_wire(strategy: str) -> None:
    # Prepare
    before = _state(*build_halves(make_config(strategy=strategy))[:2])
    own = OWN_KEYS.get(strategy, {})
    # Execute
    client, server, uploads = _train(strategy, amp="bf16", device="cpu", **own)
    full, full_server, _ = _train(strategy, **own)
    # Assert: it trained, finitely, and not as float32 does (autocast was on)
    after = _state(client.bottom, server.top)
    assert all(torch.isfinite(t).all() for t in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert any(not torch.equal(a, b) for a, b in zip(after, _state(full.bottom, full_server.top)))
    assert 0 < server.take_metrics()["train_loss"] < float("inf")
    # the bottom's output is bfloat16 under autocast, and travels as float32 (wire-dtype fp32)
    with client.placement.autocast():
        z = client.bottom(client.batch(0)[0])
    assert z.dtype == torch.bfloat16
    sent = encode(Packet.upload(z, torch.zeros(len(z), dtype=torch.int64)))
    assert sent["activations"]["z"].dtype == "float32"
    assert all(u.activations.dtype == torch.float32 for u in uploads if u.has_data)


def test_bf16_autocast_with_bf16_wire_sends_the_bfloat16_bits_unchanged() -> None:
    # Prepare
    client = make_client(make_config(amp="bf16"), "dsl")
    with client.placement.autocast():
        z = client.bottom(client.batch(0)[0])
    # Execute
    sent = encode(Packet.upload(z, torch.zeros(len(z), dtype=torch.int64)), "bf16")
    # Assert
    assert sent["activations"]["z"].dtype == "int16"  # bf16 patterns, as NumPy has no bfloat16
    assert torch.equal(torch.from_numpy(sent["activations"]["z"].numpy()), z.detach().view(torch.int16))


def test_enabled_gradient_scalers_give_the_same_csl_step_as_none() -> None:
    # Prepare: fp32 with a power-of-two scale is exact, so scaling must change nothing
    plain_client, plain_server, plain_uploads = _train("csl")
    config = make_config(strategy="csl")
    _, top, _ = build_halves(config)
    client, server = make_client(config, "csl", steps=2), make_server(config, "csl", top)
    client.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    server.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    plain = make_client(config, "csl", steps=2), make_server(config, "csl", build_halves(config)[1])
    # Execute
    requests, _ = drive_round(get_strategy("csl").client(config), server, client)
    plain_requests, _ = drive_round(get_strategy("csl").client(config), plain[1], plain[0])
    # Assert: the client got the unscaled dL/dz, and both parties took the same steps
    grads = [r.gradients for r in requests if "gradients" in r.tensors]
    plain_grads = [r.gradients for r in plain_requests if "gradients" in r.tensors]
    assert len(grads) == len(plain_grads) == 2 and all(torch.equal(a, b) for a, b in zip(grads, plain_grads))
    assert all(torch.equal(a, b) for a, b in zip(_state(client.bottom, server.top), _state(plain_client.bottom, plain_server.top)))
    assert server.scaler.get_scale() == 2.0**12 and client.scaler.get_scale() == 2.0**10  # no overflow: no backoff


def test_deterministic_switch_sets_torch_flags_and_trains_as_before_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    was = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    default_client, default_server, _ = _train("csl")
    try:
        # Execute: every op of a CSL round must have a deterministic kernel, or torch raises
        set_deterministic(True)
        client, server, _ = _train("csl", deterministic=True)
        # Assert
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        trained, default = _state(client.bottom, server.top), _state(default_client.bottom, default_server.top)
        assert all(torch.equal(a, b) for a, b in zip(trained, default))
    finally:
        torch.use_deterministic_algorithms(was[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = was[1], was[2]


def test_cuda_peaks_are_reported_per_party_and_null_without_cuda() -> None:
    # Prepare
    upload = Packet(info={"fwd_s": 0.0, "bwd_s": 0.0, "handler_s": 0.0, "peak_rss_mb": 1.0, "memory_peak_bytes": 3 << 20, "memory_saved_bytes": 0})
    on_cuda = Packet(info=dict(upload.info) | {"memory_cuda_peak_bytes": 5 << 20})
    cpu_stats, cuda_stats = RoundStats(), RoundStats()
    # Execute
    cpu_stats.note_memory("client", UploadReport.of(upload).memory)  # type: ignore[arg-type]
    cpu_stats.note_memory("server", MemoryReading(peak=4 << 20))
    cuda_stats.note_memory("client", UploadReport.of(on_cuda).memory)  # type: ignore[arg-type]
    cuda_stats.note_memory("server", MemoryReading(peak=1 << 20, cuda_peak=7 << 20))
    cuda_stats.note_memory("server", MemoryReading(peak=2 << 20, cuda_peak=6 << 20))
    cpu, cuda = cpu_stats.as_metrics(), cuda_stats.as_metrics()
    # Assert: the heap probe keeps its meaning; the CUDA peaks are the highest seen
    assert (cpu["client_peak_mb"], cpu["server_peak_mb"]) == (3.0, 4.0)
    assert (cpu["client_cuda_peak_mb"], cpu["server_cuda_peak_mb"]) == (None, None)
    assert (cuda["client_cuda_peak_mb"], cuda["server_cuda_peak_mb"]) == (5.0, 7.0)


def _context(raw: dict, clients_dir: Path) -> Context:
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 1}, state=RecordDict(), run_config=raw)
    context.state[client_state.RUN] = ConfigRecord({"clients_dir": str(clients_dir)})
    return context


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_checkpoints_written_with_device_cpu_resume_under_another_device_string(tmp_path: Path, optimizer: str) -> None:
    # Prepare: a DSL run with device = "cpu" trains a round and checkpoints both parties
    raw = {"dataset": "synthetic", "model": "resnet20", "cut": 2, "batch-size": 16, "optimizer": optimizer, "device": "cpu", "run-name": "moved"}
    config = make_config(**raw)
    strategy = get_strategy("dsl")
    server = server_app.build_server(config, strategy)
    client_state.drop_cached_slices()
    context = _context(raw, tmp_path / "clients")
    client = client_state.load_slice(context, config, strategy)
    drive_round(strategy.client(config), server, client)
    writer = ResultsWriter(str(tmp_path), "moved")
    writer.write_config(config.as_run_config())
    server_app._checkpoint(writer, server, Ledger(), None, 1, [])
    client_state.write_checkpoint(context, config, client, 1)
    # Execute: resume through the loading code with device = "auto" (the CPU here, a GPU elsewhere)
    moved = make_config(**raw | {"device": "auto", "resume": True})
    resumed = server_app.build_server(moved, strategy)
    server_app._resume(moved, ResultsWriter(str(tmp_path), "moved"), resumed, Ledger())
    client_state.drop_cached_slices()
    client_state.restore_checkpoint(context, moved, strategy, 1)
    restored = client_state.load_slice(context, moved, strategy)
    # Assert: the same weights and optimizer state, on the resuming run's device
    device = resolve_device("auto")
    assert server_app.changed_keys(moved, config.as_run_config()) == []
    assert all(torch.equal(a, b) for a, b in zip(_state(server.top, client.bottom, client.aux), _state(resumed.top, restored.bottom, restored.aux)))
    assert {p.device for p in resumed.top.parameters()} | {p.device.type for p in restored.bottom.parameters()} <= {device, device.type}
    for saved, loaded in ((server.optimizer, resumed.optimizer), (client.optimizer, restored.optimizer)):
        pairs = [(saved.state[p], loaded.state[q]) for g, h in zip(saved.param_groups, loaded.param_groups) for p, q in zip(g["params"], h["params"])]
        assert pairs and all(torch.equal(a[k].cpu(), b[k].cpu()) for a, b in pairs for k in a)
        assert all(b["step"].device.type == "cpu" for _, b in pairs if "step" in b)  # where torch keeps Adam's step


@pytest.mark.cuda
@cuda_only
@pytest.mark.parametrize("strategy", ["csl", "dsl", "fsl-sage", "splitfed-v1"])
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_halves_train_on_cuda_and_upload_float32(strategy: str, amp: str) -> None:
    # Execute
    client, server, uploads = _train(strategy, rounds=2, device="cuda", amp=amp, **OWN_KEYS.get(strategy, {}))
    # Assert
    assert {p.device.type for p in [*client.bottom.parameters(), *server.top.parameters()]} == {"cuda"}
    assert all(torch.isfinite(t).all() for t in _state(client.bottom, server.top))
    assert all(u.activations.dtype == torch.float32 and u.activations.device.type == "cuda" for u in uploads if u.has_data)
    assert client.scaler.is_enabled() == server.scaler.is_enabled() == (amp == "fp16")


@pytest.mark.cuda
@cuda_only
def test_a_cuda_checkpoint_loads_onto_the_cpu_with_adams_step_on_the_cpu(tmp_path: Path) -> None:
    # Prepare
    config = make_config(device="cuda", optimizer="adam")
    server = server_app.build_server(config, get_strategy("dsl"))
    client = make_client(config, "dsl", steps=2)
    drive_round(get_strategy("dsl").client(config), server, client)
    checkpoint.save_atomic(server.state_dict(), tmp_path / "c.pt")
    # Execute
    on_cpu = server_app.build_server(make_config(device="cpu", optimizer="adam"), get_strategy("dsl"))
    on_cpu.load_state_dict(checkpoint.load(tmp_path / "c.pt", on_cpu.placement.device))
    back = server_app.build_server(config, get_strategy("dsl"))
    back.load_state_dict(checkpoint.load(tmp_path / "c.pt", back.placement.device))
    # Assert
    assert all(torch.equal(a, b) for a, b in zip(_state(server.top), _state(on_cpu.top)))
    assert all(s["step"].device.type == "cpu" for s in back.optimizer.state.values())
    assert all(s["exp_avg"].device.type == "cuda" for s in back.optimizer.state.values())


@pytest.mark.cuda
@cuda_only
def test_the_memory_probe_reads_cuda_peaks_on_cuda() -> None:
    # Prepare
    from flsplit.memory import measure

    client = make_client(make_config(device="cuda"), "dsl", steps=1)
    # Execute
    with measure(client.modules().values(), [client.optimizer]) as reading:
        get_strategy("dsl").client(make_config(device="cuda")).train(Packet(), client, 1 << 30)
    # Assert
    assert reading.cuda_peak is not None and reading.cuda_peak > 0


@pytest.mark.cuda
@cuda_only
@pytest.mark.parametrize("wire_dtype", ["fp32", "fp16", "bf16", "int8"])
def test_a_payload_encoded_from_cuda_carries_the_same_bytes_as_from_the_cpu(wire_dtype: str) -> None:
    # Prepare
    z, y = torch.randn(8, 16, 4, 4), torch.arange(8)
    # Execute
    from_cpu = encode(Packet.upload(z, y), wire_dtype)
    from_cuda = encode(Packet.upload(z.cuda(), y.cuda()), wire_dtype)
    # Assert
    for kind in ("activations", "labels"):
        assert {k: a.numpy().tobytes() for k, a in from_cpu[kind].items()} == {k: a.numpy().tobytes() for k, a in from_cuda[kind].items()}
