"""Loggers that load ``logging`` at their first use.

``logging`` brings traceback, linecache, tokenize, textwrap and string: about 5% of the
instructions from starting ``rpfs mount`` to a volume's first listing, while most runs log
nothing. A module keeps ``log = get_logger(name)`` (from here) and calls ``log.warning(...)`` as on a
``logging.Logger`` (each attribute is the real logger's, so a record names its real caller).
The command line's settings (``configure``) are applied when ``logging`` is loaded through
here, or at once if something has loaded it already. Code that hands records to
``logging`` another way (boto3, uvicorn) calls ``load()`` first.
"""

from __future__ import annotations

import sys
import threading

_settings: dict | None = None   # logging.basicConfig's arguments, not applied yet
_lock = threading.Lock()


def configure(**settings) -> None:
    """``logging.basicConfig(**settings)``: now if ``logging`` is loaded, else on its first
    use through this module."""
    global _settings
    with _lock:
        _settings = settings
    if "logging" in sys.modules:
        load()


def load():
    """The ``logging`` module, with the settings of ``configure`` applied."""
    global _settings
    import logging

    if _settings is not None:
        with _lock:
            settings, _settings = _settings, None
            if settings is not None:
                logging.basicConfig(**settings)
    return logging


class Logger:
    """``logging.getLogger(name)``, made when a message is first logged."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, attr: str):   # warning, info, exception, isEnabledFor, ...
        return getattr(load().getLogger(self.name), attr)


def get_logger(name: str) -> Logger:
    return Logger(name)
