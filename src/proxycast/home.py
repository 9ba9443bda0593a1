"""Where proxycast keeps its state on this machine (the data directory)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where proxycast keeps its state: ``$PROXYCAST_HOME``, else ``$XDG_DATA_HOME/proxycast``."""
    env = os.environ if env is None else env
    if env.get("PROXYCAST_HOME"):
        return Path(env["PROXYCAST_HOME"])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "proxycast"
