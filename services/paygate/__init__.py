"""Paygate: a payment gateway and its bank servers.

The public client API is in `paygate.client`; the errors every part raises are in
`paygate.errors`. See ARCHITECTURE.md for the map of the code.
"""

import importlib.metadata


def _installed_version() -> str:
    # One source of truth: pyproject.toml's version, as installed (pip install -e . too).
    try:
        return importlib.metadata.version("paygate")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


__version__ = _installed_version()
