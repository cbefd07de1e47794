"""rpfs: recovery points of Hyper-V VMs, deduplicated, browsable on Linux."""

__version__ = "0.1.0"
