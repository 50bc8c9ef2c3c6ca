"""The shorter first retry of Flower's object pulls: it must match the installed flwr, or fail loudly."""

import functools
import importlib

import flwr
import pytest
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from apps import fast_pull


@pytest.fixture
def call_sites(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The three modules, restored to Flower's functions after the test."""
    modules = {name: importlib.import_module(name) for name in fast_pull.CALL_SITES}
    for name, attribute in fast_pull.CALL_SITES.items():
        monkeypatch.setattr(modules[name], attribute, getattr(modules[name], attribute))
    return modules


def test_installed_flower_still_pulls_where_the_patch_expects() -> None:
    # Fails when a flwr upgrade moves a call site or changes its 1 s first retry.
    fast_pull.check_supported()


def test_every_call_site_gets_the_short_first_retry_once(call_sites: dict[str, object]) -> None:
    # Execute: twice, as the fork server and the SuperNode both may in one process
    fast_pull.apply(0.05)
    fast_pull.apply(0.02)
    # Assert: each call site wraps Flower's own function once, with the last backoff
    for name, attribute in fast_pull.CALL_SITES.items():
        patched = getattr(call_sites[name], attribute)
        assert isinstance(patched, functools.partial) and not isinstance(patched.func, functools.partial)
        assert patched.func.__module__ == "flwr.supercore.inflatable.inflatable_utils"
        assert patched.keywords == {"initial_backoff": 0.02}


def test_a_patched_pull_still_retries_an_object_that_was_not_there_yet(call_sites: dict[str, object]) -> None:
    # Prepare: the object is missing on the first ask
    fast_pull.apply(0.001)
    asked: list[str] = []

    def pull(object_id: str) -> bytes:
        asked.append(object_id)
        if len(asked) == 1:
            raise ObjectUnavailableError(object_id)
        return b"content"

    # Execute
    pulled = call_sites["flwr.superlink.grid.http_grid"].pull_objects(["a"], pull)
    # Assert
    assert pulled == {"a": b"content"} and asked == ["a", "a"]


@pytest.mark.parametrize("version", ["1.40.2", "1.43.0", "2.0.0"])
def test_patch_refuses_other_flower_versions(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(flwr, "__version__", version)
    with pytest.raises(fast_pull.FlowerChangedError, match=version):
        fast_pull.apply()


def test_a_backoff_that_is_not_positive_is_refused_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fast_pull.BACKOFF_ENV, "0")
    with pytest.raises(ValueError, match=fast_pull.BACKOFF_ENV):
        fast_pull.apply()
