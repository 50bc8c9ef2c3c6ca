"""What a plug-in author meets, each pinned: strict key types, a bad strategy path in the one
error report, keys without editing the app (``strategy-config``), a taken name, an assignable
gradient, client-side metrics, and ``apps.check`` naming an undeclared key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flsplit.config import ConfigError
from flsplit.split import build_halves
from flsplit.wire import Packet, PayloadError
from tests.halves import drive_round, make_client, make_config, make_server
from tests.in_process_grid import run_server_app
from strategies import SplitStrategy, get_strategy, parse_config, register
from strategies.csl import CSL
from apps import check
from apps.exchange import Reply
from apps.rounds import RoundStats

PLUGIN = "tests.plugins.clipped_csl:ClippedCSL"
APP = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ({"lr": True}, "- lr: expected a number (got true)"),
        ({"batch-size": 16.0}, "- batch-size: expected an integer (got 16.0)"),
        ({"aggregate-clients": 1}, "- aggregate-clients: expected true or false (got 1)"),
        ({"run-name": 3}, "- run-name: expected a string (got 3)"),
        ({"strategy": PLUGIN, "clip-norm": True}, "- clip-norm: expected a number (got true)"),
        ({"strategy": PLUGIN, "strategy-config": "clip-norm = true"}, "- clip-norm: expected a number (got true)"),
    ],
)
def test_a_boolean_is_not_a_number_and_a_number_is_not_a_boolean(raw: dict, line: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    # Assert
    assert line in str(err.value)


def test_an_integer_is_still_a_valid_float() -> None:
    # Execute
    config = parse_config({"lr": 1, "strategy": PLUGIN, "strategy-config": "clip-norm = 2"})
    # Assert
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.params.clip_norm == 2.0


@pytest.mark.parametrize(
    ("strategy", "reason"),
    [
        ("tests.plugins.nope:X", "cannot import 'tests.plugins.nope:X' (ModuleNotFoundError"),
        ("tests.plugins.clipped_csl:Nope", "cannot import 'tests.plugins.clipped_csl:Nope' (AttributeError"),
        ("tests.plugins.clipped_csl:ClipParams", "'tests.plugins.clipped_csl:ClipParams' is <class 'tests.plugins.clipped_csl.ClipParams'>, not a SplitStrategy subclass"),
    ],
)
def test_a_bad_strategy_path_is_reported_with_every_other_bad_key(strategy: str, reason: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as err:
        parse_config({"strategy": strategy, "lr": -1, "strategy-config": "clip-norm = 1"})
    # Assert: one report, the path's reason beside the other key; no noise about strategy-config
    text = str(err.value)
    assert f"- strategy: {reason}" in text and "- lr:" in text and "strategy-config" not in text


def test_strategy_config_carries_a_plugins_keys_and_overrides_the_declared_ones() -> None:
    # Execute
    config = parse_config({"strategy": PLUGIN, "clip-norm": 3.0, "strategy-config": "{clip-norm = 0.25}"}, from_flower=True)
    # Assert: the plug-in's settings, and both spellings recorded in config.json
    assert config.params.clip_norm == 0.25
    assert config.as_run_config()["clip-norm"] == 0.25 and config.as_run_config()["strategy-config"] == "{clip-norm = 0.25}"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("clip-nrom = 0.5", "- strategy-config: unknown key 'clip-nrom'; the keys of 'tests.plugins.clipped_csl:ClippedCSL' are ['clip-norm']"),
        ("lr = 0.1", "- strategy-config: unknown key 'lr'; a shared key: set it as its own run-config key"),
        ("clip-norm = ", "- strategy-config: not TOML"),
        ("clip-norm = -1", "- clip-norm: Input should be greater than 0 (got -1)"),
    ],
)
def test_strategy_config_problems_name_the_key(text: str, line: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as err:
        parse_config({"strategy": PLUGIN, "strategy-config": text})
    # Assert
    assert line in str(err.value)


def test_registering_a_taken_name_is_an_error_naming_both_classes() -> None:
    # Prepare
    class MyCSL(CSL):
        name = "csl"

    # Execute
    with pytest.raises(ValueError) as err:
        register(MyCSL)
    # Assert: the built-in stays; registering the same class again is harmless
    assert "strategies.csl:CSL" in str(err.value) and "MyCSL" in str(err.value)
    assert get_strategy("csl") is CSL
    assert register(CSL) is CSL


def test_packet_gradients_can_be_assigned() -> None:
    # Prepare
    reply = Packet.gradient(torch.ones(2, 3))
    # Execute
    reply.gradients = reply.gradients * 0.5
    # Assert
    assert torch.equal(reply.tensors["gradients"]["dz"], torch.full((2, 3), 0.5))


def _upload(**metrics: float) -> Packet:
    upload = Packet(info={"fwd_s": 0.0, "bwd_s": 0.0, "handler_s": 0.0, "peak_rss_mb": 0.0})
    for name, value in metrics.items():
        upload.add_metric(name, value)
    return upload


def test_client_metrics_are_summed_over_a_rounds_uploads_into_the_metrics() -> None:
    # Prepare
    stats, reply = RoundStats(), Reply(node_id=1, message=None, packet=None, error=None, round_trip_s=0.0)
    # Execute
    stats.note_upload(_upload(clipped=1, norm_sum=0.5), reply, 0)
    stats.note_upload(_upload(clipped=2), reply, 1)
    # Assert
    metrics = stats.as_metrics()
    assert metrics["client.clipped"] == 3.0 and metrics["client.norm_sum"] == 0.5


@pytest.mark.parametrize("value", ["high", True])
def test_a_client_metric_that_is_not_a_number_is_a_payload_error(value: object) -> None:
    # Prepare
    upload = _upload()
    upload.info["metric.level"] = value  # type: ignore[assignment]
    # Execute / Assert
    with pytest.raises(PayloadError, match="info.metric.level: a client metric must be a number"):
        RoundStats().note_upload(upload, Reply(node_id=1, message=None, packet=None, error=None, round_trip_s=0.0), 0)


def test_the_clipping_plugin_in_process_clips_every_returned_gradient_and_reports_both_halves() -> None:
    # Prepare: the in-process helpers docs/strategies.md points plug-in authors to
    plugin: type[SplitStrategy] = get_strategy(PLUGIN)
    config = make_config(strategy=PLUGIN, **{"strategy-config": "clip-norm = 0.001"})
    client, server = make_client(config, plugin, steps=3), make_server(config, plugin, build_halves(config)[1])
    # Execute
    requests, uploads = drive_round(plugin.client(config), server, client)
    # Assert: three gradients came back, each clipped to the norm; each half counted them
    norms = [float(r.gradients.norm()) for r in requests if "gradients" in r.tensors]
    assert len(norms) == 3 and all(n == pytest.approx(0.001, rel=1e-4) for n in norms)
    metrics = server.take_metrics()
    assert metrics["clipped_gradients"] == 3 and metrics["returned_gradients"] == 3
    assert sum(u.metrics.get("received_gradients", 0) for u in uploads) == 3


def test_check_names_an_undeclared_key_and_every_bad_value() -> None:
    # Execute
    problems = check.check(APP, [f"strategy='{PLUGIN}' clip-norm=0.5 lr=true"])
    # Assert
    text = "\n".join(problems)
    assert "- clip-norm: not declared in [tool.flwr.app.config]" in text and "strategy-config='clip-norm = ...'" in text
    assert "- lr: expected a number (got true)" in text and len(problems) == 2


def test_check_accepts_a_plugin_with_its_keys_in_strategy_config(capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    status = check.main([str(APP), "--run-config", f"strategy='{PLUGIN}' strategy-config='clip-norm = 0.5'"])
    # Assert
    assert status == 0 and "run config ok" in capsys.readouterr().out


@pytest.mark.slow  # the real apps, a few seconds
@pytest.mark.usefixtures("task_identity")
def test_the_clipping_plugin_through_the_real_apps_in_process_writes_both_halves_metrics(tmp_path: Path) -> None:
    # Prepare: the real ServerApp and two ClientApps, every message through Flower's serialization
    run_config = {"strategy": PLUGIN, "strategy-config": "clip-norm = 0.01", "dataset": "synthetic", "run-name": "clipped",
                  "num-server-rounds": 1, "max-batches": 2, "batch-size": 16, "eval-samples": 32}
    # Execute
    (metrics,) = run_server_app(run_config, tmp_path, through_protobuf=True)
    # Assert
    assert metrics["clipped_gradients"] == metrics["returned_gradients"] == metrics["client.received_gradients"] == 4
    assert metrics["client.received_norm_sum"] == pytest.approx(4 * 0.01, rel=1e-3)
