"""``rpfs serve``: the namespace in a web browser (calendar, browser, search, downloads) and
a small JSON API, read-only, over the same tree as the mount and the CLI."""

from rpfs.web.app import create_app

__all__ = ["create_app"]
