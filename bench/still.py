"""``proxycast`` (its command line) with the gateway's periodic timers stretched to an hour, for
bench/instructions.py ``--still``: what a request costs, without the background's work that a timer
does every so many seconds. Under callgrind a request takes a hundred times its native time, so a
timer's work lands on each request a hundred times more than it does natively; and the versions
compared do not have the same timers. Stretched, both count their requests' work alone.

    python bench/still.py serve --config FILE

The timers named in :data:`TIMERS` that a version has are stretched (an older version lacks some);
the other background work (the limiter's write-behind, the ledger's writer) follows the requests and
is counted with them. ``SIGUSR2`` runs a full garbage collection: sent before each measurement, it
starts every version's count with its young generations empty (a collection of the objects left from
the start and the warm-up would otherwise land in one version's count and not in the other's, by
where each stands in its cycle of collections).
"""

from __future__ import annotations

import gc
import importlib
import signal
import sys

TIMERS = {
    "proxycast.core.allocator": "POLL_SECONDS",  # the allocator's trimmer
    "proxycast.server.serve": "SWEEP_SECONDS",  # idle upstream connections closed
    "proxycast.accounting.keystore": "POLL_SECONDS",  # the runtime keys' store looked at
    "proxycast.state.keys": "RECHECK_SECONDS",  # and read, whatever its stamp says
}
STRETCHED = 3600.0


def main() -> None:
    del sys.path[0]  # this folder: none of its scripts may stand for a module proxycast imports
    for module, name in TIMERS.items():
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(found, name):
            setattr(found, name, STRETCHED)
    signal.signal(signal.SIGUSR2, lambda *_: gc.collect())
    from proxycast.cli import main as cli

    sys.exit(cli())


if __name__ == "__main__":
    main()
