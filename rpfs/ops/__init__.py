"""Nightly operation: protection groups from a configuration file, runs of them (backup,
prune, verify sample), job records kept in the repository, status, schedules and notices.

Modules: ``calendar`` (systemd OnCalendar times), ``config`` (the TOML file),
``jobs`` (job records as repository objects), ``run`` (one run of a group), ``status``
(what every VM's health is), ``notify`` (the group's notify command), ``units`` (systemd
timer and service units). The commands are in ``rpfs/cli/ops.py``.
"""
