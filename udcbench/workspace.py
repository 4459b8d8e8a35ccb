"""Where datasets, runs and results live, and the folder names of a dataset's degraded copies.

Every folder is relative to the current folder by default (``data/``, ``runs/``,
``results/``), and can be moved by an environment variable or by a ``[workspace]`` table
in an optional ``udcbench.toml`` in the current folder. Environment variables win over
the file, the file over the defaults::

    # udcbench.toml
    [workspace]
    data = "/datasets/fer"
    runs = "experiments/runs"
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from udcbench.errors import UdcbenchError
from udcbench.files import check_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE = "udcbench.toml"
#: Folder prefixes per degradation preset: data/udc-rafdb, data/udc-poled-rafdb, data/ll-rafdb.
PREFIX = {"toled": "udc", "poled": "udc-poled", "lowlight": "ll"}


def condition_folder(dataset: str, condition: str) -> str:
    """The workspace folder name of a dataset under a condition: ``ferplus``, ``udc-ferplus``, ..."""
    check_name(dataset, "dataset name")
    return dataset if condition == "clean" else f"{PREFIX.get(check_name(condition, 'condition'), condition)}-{dataset}"


_DEFAULTS = {"data": "data", "runs": "runs", "results": "results", "cache": ".udcbench-cache"}
_ENV = {key: f"UDCBENCH_{key.upper()}" for key in _DEFAULTS}
#: The environment variables that move a workspace's folders.
WORKSPACE_VARS = tuple(_ENV.values())
#: How a user makes room for the cache of decoded and degraded images.
CACHE_HINT = f"free some, or move the cache to a larger disk with {_ENV['cache']} (or cache = ... in {CONFIG_FILE})"


@dataclass(frozen=True)
class Workspace:
    """Resolved workspace folders."""

    data: Path
    runs: Path
    results: Path
    cache: Path

    def dataset_dir(self, name: str) -> Path:
        """The default folder of a dataset: ``data/<name>`` (``data/udc-rafdb`` for a UDC set)."""
        return self.data / name


def load_workspace(cwd: Path | None = None) -> Workspace:
    """Resolve the workspace from defaults, ``udcbench.toml`` and ``UDCBENCH_*`` variables."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    values = dict(_DEFAULTS)
    config = cwd / CONFIG_FILE
    if config.is_file():
        try:
            table = tomllib.loads(config.read_text()).get("workspace", {})
        except tomllib.TOMLDecodeError as exc:
            raise UdcbenchError(f"{config}: not valid TOML ({exc})") from None
        unknown = set(table) - set(_DEFAULTS)
        if unknown:
            raise UdcbenchError(
                f"{config}: unknown [workspace] keys {sorted(unknown)}; known: {sorted(_DEFAULTS)}"
            )
        values.update({k: str(v) for k, v in table.items()})
    for key, var in _ENV.items():
        if os.environ.get(var):
            values[key] = os.environ[var]
    return Workspace(**{k: (cwd / Path(v).expanduser()) for k, v in values.items()})
