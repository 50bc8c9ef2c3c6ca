"""The SuperNode idle-wait patch: it must match the installed flwr, or fail loudly."""

import flwr
import pytest

from apps import fast_supernode


def test_installed_flower_still_has_the_loop_the_patch_targets() -> None:
    # Fails when a flwr upgrade changes or removes the SuperNode's 3 s idle sleep.
    fast_supernode.check_supported()


def test_patch_shortens_the_idle_wait_and_reply_poll_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: restore the module afterwards, and record sleeps instead of sleeping
    target = fast_supernode._target()
    monkeypatch.setattr(target, "time", target.time)
    slept: list[float] = []
    monkeypatch.setattr(fast_supernode.time, "sleep", slept.append)
    # Execute
    fast_supernode.apply(0.02, 0.01)
    target.time.sleep(3)
    target.time.sleep(0.5)
    target.time.sleep(0.7)
    # Assert
    assert slept == [0.02, 0.01, 0.7]
    assert target.time.monotonic is fast_supernode.time.monotonic


@pytest.mark.parametrize("version", ["1.40.2", "1.43.0", "2.0.0"])
def test_patch_refuses_other_flower_versions(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(flwr, "__version__", version)
    with pytest.raises(fast_supernode.FlowerChangedError, match=version):
        fast_supernode.apply(0.02)


@pytest.mark.parametrize("name", ["IDLE_SLEEP_SOURCE", "REPLY_POLL_SOURCE"])
def test_patch_refuses_a_changed_loop(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(fast_supernode, name, "time.sleep(7)")
    with pytest.raises(fast_supernode.FlowerChangedError, match="loop changed"):
        fast_supernode.check_supported()
