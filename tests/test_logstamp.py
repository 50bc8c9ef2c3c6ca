"""flsplit's own log lines carry a UTC time stamp; Flower's lines are left alone."""

from __future__ import annotations

import logging
import re
from logging import INFO

import pytest
from flwr.common.logger import FLOWER_LOGGER, log

from flsplit import logstamp

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def collected() -> list[str]:
    handler = _Collect()
    FLOWER_LOGGER.addHandler(handler)
    try:
        yield handler.lines
    finally:
        FLOWER_LOGGER.removeHandler(handler)


def test_lines_logged_from_flsplit_modules_are_stamped_and_others_are_not(collected: list[str]) -> None:
    # Prepare: the ServerApp's module installs the stamp on import
    from apps import server_app  # noqa: F401, PLC0415

    logstamp.install()  # a second install adds no second stamp
    # Execute: one line from flsplit's code, one from elsewhere (this test module)
    logstamp_line = logging.LogRecord("flwr", INFO, logstamp.__file__, 1, "round %d done", (3,), None)
    FLOWER_LOGGER.handle(logstamp_line)
    log(INFO, "from a test, not from flsplit")
    # Assert
    assert STAMP.match(collected[0]) and collected[0].endswith(" round 3 done")
    assert collected[0].count("Z ") == 1
    assert collected[1] == "from a test, not from flsplit"
