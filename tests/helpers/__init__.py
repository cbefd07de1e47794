"""Code shared by several test modules (image builders, stream checks). Test modules never
import each other: what two of them need lives here or in ``tests/conftest.py``."""
