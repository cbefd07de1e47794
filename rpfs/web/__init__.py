"""``rpfs serve``: the namespace in a web browser (calendar, browser, search, downloads) and
a small JSON API, read-only, over the same tree as the mount and the CLI.

``rpfs.web.app.create_app(tree, ...)`` makes the application. This package imports none of
its modules, so ``from rpfs.web import nodes`` inside it never runs the app's imports first.
"""
