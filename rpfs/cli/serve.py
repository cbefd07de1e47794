"""``rpfs serve``: the web page and its JSON API over one SOURCE (rpfs.web)."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

from rpfs import heap
from rpfs.cli.browse import SOURCE_HELP, add_keys_option, open_tree
from rpfs.cli.mount import MOUNT_CHUNK_CACHE
from streams.errors import UsageError
from rpfs.ratelimit import RateLimit, parse_rate

DEFAULT_LISTEN = "127.0.0.1:8080"


def register(sub) -> None:
    p = sub.add_parser("serve", help="browse, search and download in a web browser (read-only)")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to listen on (default {DEFAULT_LISTEN}; port 0: any free port)."
                        " Any address but loopback needs --token-file")
    p.add_argument("--token-file", metavar="FILE",
                   help="a file holding the token every request must carry (the page asks once)")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve HTTPS with this certificate (PEM; with --tls-key): the token and "
                        "the session cookie (then Secure) never travel in clear")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--trusted-proxy", metavar="ADDRESS",
                   help="a TLS proxy in front at this address (comma-separated for several): "
                        "its X-Forwarded-Proto and X-Forwarded-For are believed (cookie Secure "
                        "when it says https; wrong tokens limited per real client); needs "
                        "--token-file")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="close a connection whose request headers are not complete within "
                        "this long (default 10)")
    p.add_argument("--limit-rate", type=parse_rate, metavar="RATE",
                   help="bound the downloads, all together, e.g. 2M (bytes per second)")
    p.add_argument("--config", metavar="FILE",
                   help="protection groups for the dashboard and /metrics (default: $RPFS_CONFIG,"
                        " else /etc/rpfs/rpfs.toml if it exists)")
    add_keys_option(p)
    p.set_defaults(func=cmd_serve)


def load_ops_config(given: str | None):
    """(config, error line): the groups the dashboard reports on; a broken file is shown on
    the page rather than stopping the server."""
    import os

    from rpfs.ops.config import ConfigError, config_path, load
    path = config_path(given)
    if given is None and not os.path.exists(path):
        return None, None
    try:
        return load(path), None
    except ConfigError as e:
        return None, str(e)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[v6]:PORT`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen: not HOST:PORT: {value}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise UsageError(f"--token-file: {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--token-file: {path}: not UTF-8 text") from None
    if len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError(f"--token-file: {path}: the token must be at least 16 printable "
                         "characters without spaces")
    return token


def cmd_serve(args) -> int:
    import uvicorn

    import rpfs.log

    rpfs.log.load()   # uvicorn logs through logging: the command line's settings apply to it

    from rpfs.web.app import create_app
    from rpfs.web.protocol import timed_protocol

    host, port = parse_listen(args.listen)
    token = read_token(args.token_file) if args.token_file else None
    loopback = is_loopback(host)
    if not loopback and token is None:
        raise UsageError(f"refusing to listen on {host} without --token-file (anyone who can "
                         "reach it could read every recovery point)")
    if args.trusted_proxy and token is None:
        raise UsageError("--trusted-proxy needs --token-file (through the proxy, anyone who can "
                         "reach it could read every recovery point)")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path and not Path(path).is_file():
            raise UsageError(f"{option}: {path}: no such file")
    if not args.header_timeout > 0:
        raise UsageError("--header-timeout: must be more than 0 seconds")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if args.store.chunk_cache_bytes is None:
        # downloads stream each chunk once: like a mount's, the chunk cache only has to
        # hold read-ahead and the metadata being parsed (128 -> 32 MiB: a 100,000-file
        # folder zipped or listed had the server keep 96 MiB more for nothing)
        args.store = args.store.with_(chunk_cache_bytes=MOUNT_CHUNK_CACHE)
    heap.limit_arenas()
    with open_tree(args) as tree, \
            socket.create_server((host, port), family=family) as sock:  # errors: one line
        # behind a proxy the Host is the proxy's public name: the token guards instead
        cfg, cfg_error = load_ops_config(args.config)
        app = create_app(tree, source=Path(args.source).name or str(args.source), token=token,
                         loopback=loopback and not args.trusted_proxy,
                         limit=RateLimit(args.limit_rate) if args.limit_rate else None,
                         ops_config=cfg, ops_config_error=cfg_error)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        scheme = "https" if args.tls_cert else "http"
        print(f"rpfs: serving {args.source} at {scheme}://{shown}:{bound}/ (Ctrl-C to stop)",
              file=sys.stderr, flush=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, server_header=False,
                                http=timed_protocol(args.header_timeout),
                                proxy_headers=bool(args.trusted_proxy),
                                forwarded_allow_ips=args.trusted_proxy or "",
                                ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
        uvicorn.Server(config).run(sockets=[sock])
    return 0
