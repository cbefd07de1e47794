"""The bottom layer: positionless byte streams, the typed errors every parser raises, and the
one bounded LRU cache they share.

It imports nothing of ``rpfs``, ``formats`` or the readers, so a parser in ``formats/`` or
``*_reader/`` can be used (and fuzzed) with this package alone beneath it.
"""
