"""Flower ServerApp and ClientApp of flsplit."""

import time as _time

#: When this package started importing: the first stamp of the ClientApp's import cost (flsplit.trace).
IMPORT_STARTED_AT = _time.time()
