"""The warm SuperExec's seams: they must match the installed flwr, or fail loudly."""

from __future__ import annotations

import shutil
from pathlib import Path

import flwr
import pytest
from flwr.supercore.constant import ExecutorType
from flwr.supercore.superexec import run_superexec as superexec_loop

from apps import warm_superexec


def test_installed_flower_still_has_the_seams_the_warm_superexec_uses() -> None:
    # Fails when a flwr upgrade changes the executor seam, run_clientapp or ExecutionSpec.
    warm_superexec.check_supported()


@pytest.mark.parametrize("version", ["1.40.2", "1.43.0", "2.0.0"])
def test_refuses_other_flower_versions(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(flwr, "__version__", version)
    with pytest.raises(warm_superexec.FlowerChangedError, match=version):
        warm_superexec.check_supported()


def test_refuses_a_superexec_that_no_longer_builds_its_executor_with_get_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm_superexec, "EXECUTOR_SEAM_SOURCE", "executor = make_executor(")
    with pytest.raises(warm_superexec.FlowerChangedError, match="get_executor"):
        warm_superexec.check_supported()


def test_refuses_a_run_clientapp_with_other_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm_superexec, "RUN_CLIENTAPP_PARAMETERS", ("runtime_api_address", "token"))
    with pytest.raises(warm_superexec.FlowerChangedError, match="run_clientapp changed"):
        warm_superexec.check_supported()


class _Unused:
    """A fork server that is never asked for anything (install only stores it)."""


def test_install_replaces_only_the_subprocess_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: put Flower's factory back afterwards
    monkeypatch.setattr(superexec_loop, "get_executor", superexec_loop.get_executor)
    server = _Unused()
    # Execute
    warm_superexec.install(server)  # type: ignore[arg-type]
    executor = superexec_loop.get_executor(ExecutorType.SUBPROCESS)
    # Assert: the subprocess executor is ours; Flower's Kubernetes one still needs its config
    assert isinstance(executor, warm_superexec.WarmExecutor) and executor.server is server
    with pytest.raises(ValueError, match="executor-config"):
        superexec_loop.get_executor(ExecutorType.KUBERNETES)


def test_preloaded_app_is_reused_only_if_the_fab_ships_identical_modules(tmp_path: Path) -> None:
    # Prepare: a FAB directory with byte-identical copies of the app's own modules
    sources = warm_superexec.first_party_sources(["apps.client_app"])
    assert {"apps.client_app", "apps.client_state", "flsplit.wire", "strategies"} <= set(sources)
    assert not any(name.startswith(("torch", "flwr", "numpy")) for name in sources)
    for inside, source in sources.values():
        (tmp_path / inside).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / inside).write_bytes(source)
    # Execute / Assert
    assert warm_superexec.fab_matches(tmp_path, sources)
    (tmp_path / "strategies" / "__init__.py").unlink()  # a module the FAB does not ship comes from elsewhere
    assert warm_superexec.fab_matches(tmp_path, sources)
    (tmp_path / "flsplit" / "wire.py").write_text("# another version\n")
    assert not warm_superexec.fab_matches(tmp_path, sources)


def test_installed_fab_is_found_by_its_hash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Prepare
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    fab_hash = "0123abcd" + "f" * 56
    installed = tmp_path / "apps" / "flsplit.flsplit.0.1.0.0123abcd"
    installed.mkdir(parents=True)
    # Execute / Assert
    assert warm_superexec.installed_fab(fab_hash) == installed
    assert warm_superexec.installed_fab("9" * 64) is None
    assert warm_superexec.installed_fab(None) is None
    shutil.rmtree(installed)
    assert warm_superexec.installed_fab(fab_hash) is None


def test_fork_server_that_cannot_preload_fails_at_start_naming_the_module() -> None:
    with pytest.raises(RuntimeError, match="no_such_module_for_flsplit"):
        warm_superexec.ForkServer(["no_such_module_for_flsplit"])


def test_fork_server_starts_and_stops() -> None:
    # Execute
    server = warm_superexec.ForkServer(["json"])
    alive = server.process.is_alive()
    server.close()
    # Assert
    assert alive and not server.process.is_alive()
