"""Forgetting recovery points in one step, wherever the process is killed (prune's commit).

A recovery point is its ``rps/`` object (and ``scans/``) plus its catalog rows, and any
reader rebuilds its catalog from whichever objects it sees. Deleting several objects is
not atomic as a group on a directory or on S3, and neither are the deletes and the catalog
commit: killed in between, a prune left catalog rows whose objects were gone, or half of
the recovery points it meant to forget. So the decision is written first, as one object
``forget/<name>`` naming them (VM and name), with a single put (a directory: a durable file
linked into place; S3: one PUT). Once it exists they are forgotten, by everyone:

- opening a directory (``Repository.open``) and ``sync`` (every writer; every open of an
  s3:// cache) drop their catalog rows, and sync never imports their objects, so a reader
  sees all a killed prune forgot or nothing, on any machine; ``verify`` leaves them out and
  notes that a prune is to be finished; a backup refuses to make a recovery point of a name
  being forgotten (its object would be deleted with the old one's);
- under the exclusive lock (prune, repair) ``finish`` carries the decision out: catalog rows,
  then the objects, then the intent itself, last. Each step is idempotent, so a kill
  anywhere leaves the intent, and the next prune or repair does it all again.

Killed while the intent is written, it does not exist (a directory links the file only once
it is durable; a PUT is whole or absent) and nothing was touched. Intents are made and
removed only under the exclusive lock, so a backup (shared lock) sees a fixed set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.errors import RpfsError
import rpfs.store.catalog as catalog
import rpfs.store.objects as objects


@dataclass
class Intent:
    name: str                                   # the object forget/<name>
    rps: list[tuple[str, str]] = field(default_factory=list)   # (VM, name)
    error: str | None = None                    # unreadable: what it names is unknown

    @property
    def key(self) -> str:
        return f"{objects.FORGET}/{self.name}"


def outstanding(repo) -> list[Intent]:
    """The intents in the repository now (a directory: one listing of ``forget/``, which
    does not exist until the first prune)."""
    out = []
    for name in sorted(repo.backend.list_objects(objects.FORGET)):
        try:
            rps = objects.get_forget(repo, name)
        except (RpfsError, OSError) as e:
            out.append(Intent(name, error=str(e)))
            continue
        if rps is not None:   # else finished since the listing
            out.append(Intent(name, rps))
    return out


def named(intents: list[Intent]) -> set[tuple[str, str]]:
    """(VM, name) of every recovery point the readable intents forget."""
    return {rp for i in intents for rp in i.rps}


def begin(repo, rps: list[tuple[str, str]]) -> Intent:
    """The commit point of a prune: once this returns, ``rps`` are forgotten."""
    return Intent(objects.put_forget(repo, rps), list(rps))


def finish(repo, intent: Intent) -> None:
    """Carry an intent out (caller holds the exclusive lock): catalog rows, objects, then the
    intent. The objects go before the intent so that, while any of them is left, something
    still says it is forgotten."""
    catalog.drop_recovery_points(repo.writer, intent.rps)
    for vm, name in intent.rps:
        n = objects.rp_object_name(repo.crypto, vm, name)
        repo.backend.delete_object(f"{objects.RPS}/{n}")
        repo.backend.delete_object(f"{objects.SCANS}/{n}")
    repo.backend.delete_object(intent.key)


def finish_all(repo) -> list[Intent]:
    """Finish what killed prunes decided (caller holds the exclusive lock). An unreadable
    intent is left where it is (what it names stays; ``verify`` names it). Returns the
    intents finished."""
    done = [i for i in outstanding(repo) if i.error is None]
    for i in done:
        finish(repo, i)
    return done
