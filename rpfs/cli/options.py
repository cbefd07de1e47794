"""The environment, read once: the CLI turns ``--s3-endpoint``/``--cache-dir``/``--cache-size``
and the variables below into the ``StoreOptions`` every command passes down (the store
itself never reads the environment).

- ``AWS_ENDPOINT_URL`` (unless ``--s3-endpoint``), ``AWS_DEFAULT_REGION`` / ``AWS_REGION``;
- ``RPFS_CACHE_DIR`` (unless ``--cache-dir``), ``XDG_CACHE_HOME``, ``RPFS_CACHE_SIZE``
  (unless ``--cache-size``): an s3:// repository's local directory and its block cache;
- ``RPFS_CACHE_MB``: the decompressed-chunk cache (else the repository's ``cache_mb``);
- ``RPFS_S3_ATTEMPTS``: tries of one S3 request;
- ``RPFS_PASSWORD``, ``RPFS_PASSWORD_FILE`` (first line), else the terminal: the passphrase
  of an encrypted repository.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from streams.errors import UsageError
from rpfs.sizes import positive_size
from rpfs.store import StoreOptions


class Passphrase:
    """``StoreOptions.passphrase`` of the CLI: the environment as it was at start, one kept
    for a mount's forked child (asked before the fork), or the terminal."""

    def __init__(self, environ: Mapping[str, str]):
        self.value = environ.get("RPFS_PASSWORD")
        self.file = environ.get("RPFS_PASSWORD_FILE") or None

    def prompt_needed(self) -> bool:
        return self.value is None and self.file is None

    def keep(self, pw: str) -> None:
        self.value = pw

    def __call__(self, where: str, new: bool = False) -> str:
        pw = self.value
        if pw is None and self.file:
            try:
                with open(self.file, encoding="utf-8") as f:
                    pw = f.readline().rstrip("\r\n")
            except OSError as e:
                raise UsageError(f"RPFS_PASSWORD_FILE {self.file}: {e.strerror}") from None
        if pw is None:
            if not sys.stdin.isatty():
                raise UsageError(f"{where} is encrypted: set RPFS_PASSWORD or RPFS_PASSWORD_FILE"
                                 " (no terminal to ask on)")
            import getpass  # with termios: only when a terminal is asked

            pw = getpass.getpass(f"passphrase for {where}: ")
            if new and getpass.getpass("again: ") != pw:
                raise UsageError("the passphrases do not match")
        if not pw:
            raise UsageError("empty passphrase")
        return pw


def _number(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not a number") from None


def store_options(args=None, environ: Mapping[str, str] | None = None) -> StoreOptions:
    """``StoreOptions`` from the command line's repository options and ``environ``
    (default: this process's environment)."""
    env = os.environ if environ is None else environ
    opt = StoreOptions(passphrase=Passphrase(env))
    endpoint = getattr(args, "s3_endpoint", None) or env.get("AWS_ENDPOINT_URL") or None
    cache_dir = getattr(args, "cache_dir", None) or env.get("RPFS_CACHE_DIR") or None
    size = getattr(args, "cache_size", None)
    if size is None and env.get("RPFS_CACHE_SIZE"):
        import argparse   # positive_size's error

        try:
            size = positive_size(env["RPFS_CACHE_SIZE"])
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"RPFS_CACHE_SIZE: {e}") from None
    chunk_mb = _number(env, "RPFS_CACHE_MB")
    attempts = _number(env, "RPFS_S3_ATTEMPTS")
    return opt.with_(
        endpoint=endpoint, region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or None,
        cache_dir=os.path.abspath(cache_dir) if cache_dir else None,
        cache_home=env.get("XDG_CACHE_HOME") or None,
        block_cache_bytes=size if size else opt.block_cache_bytes,
        chunk_cache_bytes=None if chunk_mb is None else max(0, chunk_mb) << 20,
        s3_attempts=max(1, attempts) if attempts is not None else opt.s3_attempts)
