"""The comparison driver keeps finished methods from its committed JSON (a fresh machine has no checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.compare_strategies import completed_results, shared_settings


def _write(path: Path, settings: dict, methods: dict, complete: list[str]) -> None:
    status = {"complete": complete, "partial": [m for m in methods if m not in complete], "missing": []}
    path.write_text(json.dumps({"settings": settings, "status": status, "methods": methods}))


def test_keeps_only_complete_methods_with_the_chosen_optimizer(tmp_path: Path) -> None:
    settings = shared_settings(20, 0, 0, 0, "cosine")
    methods = {
        "csl": {"optimizer": "adam-0.001", "rounds": [{"round": 1}]},
        "dsl": {"optimizer": "adam-0.001", "rounds": [{"round": 1}]},
        "fedavg": {"optimizer": "sgd-0.05", "rounds": [{"round": 1}]},
    }
    path = tmp_path / "compare_strategies.json"
    _write(path, settings, methods, complete=["csl", "fedavg"])
    chosen = {"csl": "adam-0.001", "dsl": "adam-0.001", "fedavg": "sgd-0.1"}
    # dsl is partial (rerun from round 1); fedavg finished with an optimizer no longer chosen.
    assert completed_results(path, settings, chosen) == {"csl": methods["csl"]}


def test_other_settings_or_no_file_keep_nothing(tmp_path: Path) -> None:
    settings = shared_settings(20, 0, 0, 0, "cosine")
    path = tmp_path / "compare_strategies.json"
    assert completed_results(path, settings, {"csl": "adam-0.001"}) == {}
    _write(path, settings, {"csl": {"optimizer": "adam-0.001", "rounds": []}}, complete=["csl"])
    assert completed_results(path, shared_settings(30, 0, 0, 0, "cosine"), {"csl": "adam-0.001"}) == {}
