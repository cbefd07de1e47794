"""The repository on S3-compatible object storage (``s3://BUCKET/PREFIX``), through botocore.

Objects under the prefix: ``config``, ``keys/default``, ``packs/<name>``, ``rps/<name>``,
``maps/<name>``, ``index/<name>``, ``scans/<name>``, ``forget/<name>`` (the same keys a local
repository keeps as files), and
``locks/<id>``, ``readers/<id>`` of the processes using it. The endpoint and region come in
``StoreOptions`` (the CLI takes them from ``--s3-endpoint`` or ``AWS_ENDPOINT_URL``);
credentials the way boto3 finds them (``AWS_ACCESS_KEY_ID``, profiles, ...). The catalog,
lock files, reader registrations and block cache of this machine are in a local directory.

- Packs are uploaded in one PUT up to ``PART`` bytes, else as a multipart upload (parts in
  parallel); every PUT and the multipart completion carry ``If-None-Match: *``, so an object
  is written once and never replaced (a server that does not support it simply ignores it).
- Reads are ranged GETs of ``BLOCK``-aligned pieces of a pack, kept in the disk cache: the
  chunks a file needs sit next to each other in its packs, so one GET serves several
  (read-ahead for free) and a second read is local. Every chunk read is then checked against
  its id by the repository; small objects carry their own digest or AEAD tag.
- The repository lock across machines: lock objects ``locks/<id>`` (host, pid, what,
  exclusive), like restic's: any number of shared ones (backups), or one exclusive one
  (prune, gc, repair); each process also takes the same lock in the local directory.
- Retries: botocore's "standard" mode (exponential backoff with jitter) for errors before a
  response; a connection dropped while a body streams is retried here the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import socket
import threading
import time
from datetime import datetime, timezone
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from streams.errors import IntegrityError, NotFoundError, RpfsError, UsageError
from rpfs.store.backend import _NAME, Backend, PackMissing, check_key
from rpfs.store.diskcache import DiskCache
from rpfs.store.locks import WAIT_POLL, LocalLocks, RepositoryBusy
from rpfs.store.options import SCHEME, StoreOptions, is_s3  # noqa: F401  (is_s3: for callers)
from rpfs.log import get_logger, load as load_logging

PART = 16 << 20          # packs up to this size go in one PUT; larger ones in parts of this size
BLOCK = 4 << 20          # ranged GETs fetch (and the disk cache keeps) aligned blocks of this size
LOCK_REFRESH = 300       # a writer rewrites its lock object this often
LOCK_STALE = 1800        # a lock object older than this belongs to a writer that died
log = get_logger("rpfs.store")
load_logging()   # botocore logs through logging: the command line's settings apply to it


class S3Error(RpfsError, OSError):
    """The object store refused or could not be reached (after retries)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def parse_address(address: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    rest = address[len(SCHEME):]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in "-." for c in bucket):
        raise UsageError(f"{address}: not a bucket address (s3://BUCKET/PREFIX)")
    return bucket, prefix


def make_client(options: StoreOptions):
    import boto3
    from botocore.config import Config

    endpoint = options.endpoint
    cfg = Config(retries={"max_attempts": max(1, options.s3_attempts), "mode": "standard"},
                 connect_timeout=5, read_timeout=60, max_pool_connections=32,
                 # servers such as Ceph RGW predate the new default checksum headers
                 request_checksum_calculation="when_required",
                 response_checksum_validation="when_required",
                 s3={"addressing_style": "path"} if endpoint else {})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=cfg,
                                          region_name=options.region or "us-east-1")


class S3Backend(Backend):
    parallel_puts = 3      # each upload is mostly waiting on the network
    prefetch = 2           # blocks fetched ahead of a sequential reader

    catalog_is_cache = True

    def __init__(self, address: str, options: StoreOptions, *, cache: bool = True):
        """``cache``: keep pieces of packs read in the block cache (``options``' bound)."""
        import botocore.exceptions as bx
        import urllib3.exceptions as ux

        self.address = address
        self.bucket, self.prefix = parse_address(address)
        self.local = options.local_dir(address)
        os.makedirs(self.local, mode=0o700, exist_ok=True)
        self.locks = LocalLocks(self.local)
        self.staging = os.path.join(self.local, "tmp")
        os.makedirs(self.staging, mode=0o700, exist_ok=True)
        self.cache = DiskCache(os.path.join(self.local, "blocks"), options.block_cache_bytes) \
            if cache else None
        self.attempts = max(1, options.s3_attempts)
        self.s3 = make_client(options)
        self.requests = 0            # GET/PUT/HEAD/LIST/DELETE sent (for tests and benchmarks)
        self._bx = bx
        self._transient = (bx.ConnectionError, bx.HTTPClientError, bx.ResponseStreamingError,
                           bx.IncompleteReadError, ux.HTTPError, ConnectionError, TimeoutError)
        self._flight: dict[str, threading.Lock] = {}
        self._flight_lock = threading.Lock()
        self._last_block: dict[str, int] = {}          # pack -> the block fetched last
        self._ahead = ThreadPoolExecutor(self.prefetch, thread_name_prefix="rpfs-s3-ahead")
        self._reader_lock = threading.Lock()
        self._reader_id: str | None = None             # readers/<id> while we publish one
        self._reader_body = b""
        self._reader_stop = threading.Event()
        self._reader_thread: threading.Thread | None = None

    # --- errors and retries ------------------------------------------------------------
    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, *args, **kw):
        """One request. botocore retries it until a response starts; a connection lost
        while the body streams (which botocore cannot retry) is retried here the same way."""
        delay = 0.1
        for attempt in range(self.attempts):
            self.requests += 1
            try:
                return fn(*args, **kw)
            except self._transient as e:
                if attempt + 1 == self.attempts or isinstance(e, self._bx.EndpointConnectionError):
                    raise S3Error(f"{self.address}: {what}: {e}") from None
            except self._bx.ClientError as e:
                raise self._client_error(what, e) from None
            except self._bx.NoCredentialsError:
                raise S3Error(f"{self.address}: no S3 credentials (set AWS_ACCESS_KEY_ID and"
                              " AWS_SECRET_ACCESS_KEY)") from None
            except self._bx.BotoCoreError as e:
                raise S3Error(f"{self.address}: {what}: {e}") from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    def _client_error(self, what: str, e) -> Exception:
        code = e.response.get("Error", {}).get("Code", "")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            if code == "NoSuchBucket":
                return NotFoundError(f"{self.address}: no bucket {self.bucket}")
            return FileNotFoundError(what)
        if status == 412 or code == "PreconditionFailed":
            return FileExistsError(what)
        if status == 416 or code == "InvalidRange":
            return EOFError(what)
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return S3Error(f"{self.address}: {what}: access denied ({code})")
        return S3Error(f"{self.address}: {what}: {code or status}: {e.response.get('Error', {}).get('Message', '')}")

    def _read(self, key: str, rng: str | None = None) -> bytes:
        def go():
            kw = {"Range": rng} if rng else {}
            r = self.s3.get_object(Bucket=self.bucket, Key=self._key(key), **kw)
            return r["Body"].read()
        return self._call(f"get {key}", go)

    # --- the bucket ------------------------------------------------------------------
    def ensure_bucket(self) -> None:
        try:
            self._call("head bucket", self.s3.head_bucket, Bucket=self.bucket)
        except (FileNotFoundError, NotFoundError):
            try:
                self._call("create bucket", self.s3.create_bucket, Bucket=self.bucket)
            except FileExistsError:
                pass

    def create(self, config: bytes, key_file: bytes | None) -> None:
        self.ensure_bucket()
        if self.get_object("config") is not None:
            raise UsageError(f"{self.address}: already holds a repository")
        if key_file is not None:
            self.put_object("keys/default", key_file)
        if not self.put_object("config", config):   # config last: it marks a repository
            raise UsageError(f"{self.address}: already holds a repository")

    def read_config(self) -> bytes:
        raw = self.get_object("config")
        if raw is None:
            raise NotFoundError(f"{self.address}: no rpfs repository there")
        return raw

    # --- packs ---------------------------------------------------------------------------
    def put(self, name: str, local_path: str) -> None:
        key = self._key(f"packs/{name}")
        size = os.path.getsize(local_path)
        try:
            if size <= PART:
                with open(local_path, "rb") as f:
                    body = f.read()
                self._call(f"put pack {name}", self.s3.put_object, Bucket=self.bucket, Key=key,
                           Body=body, IfNoneMatch="*")
            else:
                self._multipart(name, key, local_path, size)
        except FileExistsError:
            raise IntegrityError(f"pack {name} already exists in {self.address}") from None
        os.unlink(local_path)

    def _multipart(self, name: str, key: str, local_path: str, size: int) -> None:
        up = self._call(f"start upload of {name}", self.s3.create_multipart_upload,
                        Bucket=self.bucket, Key=key)["UploadId"]

        def part(i: int) -> dict:
            with open(local_path, "rb") as f:
                body = os.pread(f.fileno(), PART, i * PART)
            r = self._call(f"upload part {i + 1} of {name}", self.s3.upload_part, Bucket=self.bucket,
                           Key=key, UploadId=up, PartNumber=i + 1, Body=body)
            return {"PartNumber": i + 1, "ETag": r["ETag"]}
        try:
            with ThreadPoolExecutor(4, thread_name_prefix="rpfs-s3-part") as pool:
                parts = list(pool.map(part, range((size + PART - 1) // PART)))
            self._call(f"complete upload of {name}", self.s3.complete_multipart_upload,
                       Bucket=self.bucket, Key=key, UploadId=up,
                       MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except BaseException:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up)
            except Exception:
                pass   # the next writer's clean_staging aborts what is left
            raise

    def get(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if self.cache is None:
            return self._range(name, offset, offset + length)
        parts = []
        end = offset + length
        while offset < end:
            b = offset // BLOCK
            take = min(end, (b + 1) * BLOCK) - offset
            part = self._block(name, b, offset - b * BLOCK, take)
            parts.append(part)
            if len(part) < take:        # the pack ends here
                break
            offset += take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def get_direct(self, name: str, offset: int, length: int) -> bytes:
        return self._range(name, offset, offset + length) if length > 0 else b""

    def get_part(self, name: str, offset: int, length: int) -> bytes:
        """From a cached block if there is one, else one ranged GET of just these bytes, kept
        in the disk cache under their own key: a random 4 KiB read of a framed chunk fetches
        its table and frame (~70 KiB), not the 4 MiB block around them."""
        if self.cache is None or length <= 0 or length > BLOCK:
            return self.get(name, offset, length)
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        if all(f"{name}-{b}" in self.cache for b in range(first, last + 1)):
            return self.get(name, offset, length)
        key = f"{name}@{offset}+{length}"
        data = self.cache.get(key)
        if data is None:
            data = self._range(name, offset, offset + length)
            if len(data) == length:
                self.cache.put(key, data)
        return data

    def _range(self, name: str, start: int, end: int) -> bytes:
        try:
            return self._read(f"packs/{name}", f"bytes={start}-{end - 1}")
        except FileNotFoundError:
            raise PackMissing(f"pack {name} is missing") from None
        except EOFError:
            return b""

    def _block(self, name: str, b: int, start: int, length: int) -> bytes:
        """``length`` bytes at ``start`` of block ``b``: from the disk cache, else the block
        is fetched whole. A reader going through a pack in order gets the next blocks
        fetched meanwhile."""
        key = f"{name}-{b}"
        data = self.cache.get(key, start, length)
        if data is None:
            block = self._fetch_block(name, b)
            data = block[start:start + length]
            full = len(block) == BLOCK
        else:
            full = True
        with self._flight_lock:
            sequential = self._last_block.get(name) == b - 1
            self._last_block[name] = b
            if len(self._last_block) > 1024:
                self._last_block.clear()
        if sequential and full:
            for k in range(b + 1, b + 1 + self.prefetch):
                if f"{name}-{k}" not in self.cache and f"{name}-{k}" not in self._flight:
                    self._ahead.submit(self._prefetch, name, k)
        return data

    def _fetch_block(self, name: str, b: int) -> bytes:
        key = f"{name}-{b}"
        with self._flight_lock:             # one GET per block, however many readers want it
            lock = self._flight.setdefault(key, threading.Lock())
        with lock:
            data = self.cache.get(key)
            if data is None:
                data = self._range(name, b * BLOCK, (b + 1) * BLOCK)
                self.cache.put(key, data)
        with self._flight_lock:
            self._flight.pop(key, None)
        return data

    def _prefetch(self, name: str, b: int) -> None:
        try:
            if f"{name}-{b}" not in self.cache:
                self._fetch_block(name, b)
        except Exception:
            pass    # only a guess: the reader fetches it itself if it comes to it

    def discard_cached(self, name: str, offset: int, length: int) -> bool:
        """Forget cached blocks of a range (a chunk from them failed its check)."""
        if self.cache is None:
            return False
        for b in range(offset // BLOCK, (offset + max(length, 1) - 1) // BLOCK + 1):
            self.cache.discard(f"{name}-{b}")
        self.cache.discard(f"{name}@{offset}+{length}")     # a range get_part kept
        return True

    def size(self, name: str) -> int | None:
        try:
            r = self._call(f"head pack {name}", self.s3.head_object, Bucket=self.bucket,
                           Key=self._key(f"packs/{name}"))
        except FileNotFoundError:
            return None
        return r["ContentLength"]

    def _list(self, kind: str) -> Iterator[tuple[str, int]]:
        pre = self._key(kind) + "/"
        token = None
        while True:
            kw = {"ContinuationToken": token} if token else {}
            r = self._call(f"list {kind}", self.s3.list_objects_v2, Bucket=self.bucket,
                           Prefix=pre, **kw)
            for o in r.get("Contents", []):
                yield o["Key"][len(pre):], o["Size"], o["LastModified"]
            if not r.get("IsTruncated"):
                return
            token = r["NextContinuationToken"]

    def list(self) -> Iterator[tuple[str, int]]:
        yield from ((n, s) for n, s, _ in self._list("packs") if _NAME.match(n))

    def delete(self, name: str) -> None:
        self._call(f"delete pack {name}", self.s3.delete_object, Bucket=self.bucket,
                   Key=self._key(f"packs/{name}"))

    # --- small objects -------------------------------------------------------------------
    def put_object(self, key: str, data: bytes) -> bool:
        try:
            self._call(f"put {key}", self.s3.put_object, Bucket=self.bucket,
                       Key=self._key(check_key(key)), Body=data, IfNoneMatch="*")
        except FileExistsError:
            return False
        return True

    def get_object(self, key: str) -> bytes | None:
        try:
            return self._read(check_key(key))
        except FileNotFoundError:
            return None

    def list_objects(self, kind: str) -> Iterator[str]:
        yield from (n for n, _, _ in self._list(kind))

    def delete_object(self, key: str) -> None:
        self._call(f"delete {key}", self.s3.delete_object, Bucket=self.bucket,
                   Key=self._key(check_key(key)))

    # --- the repository lock across machines ------------------------------------------
    @contextlib.contextmanager
    def lock(self, what: str, *, exclusive: bool, wait: bool, name: str):
        """The lock of this machine's processes (lock files in the cache directory), then
        the lock objects every machine sees: ``locks/<id>`` (host, pid, what, exclusive),
        rewritten every ``LOCK_REFRESH`` s while held (one not rewritten for ``LOCK_STALE`` s
        belongs to a process that died). Shared ones coexist; an exclusive one excludes all.
        Two processes taking conflicting locks at once both see each other and back off."""
        with self.locks.lock(what, exclusive=exclusive, wait=wait, name=name):
            while True:
                held = self._take(what, exclusive)
                if held is None:
                    break
                if not wait:
                    raise RepositoryBusy(f"repository {name} is busy ({held})")
                time.sleep(WAIT_POLL * (1 + random.random()))
            try:
                yield
            finally:
                self._release()

    def _take(self, what: str, exclusive: bool) -> str | None:
        """None once our lock object is written and no conflicting one is live; else who
        holds the conflicting lock."""
        def conflicts(exclude=None):
            return [desc for _, d, desc in self._live_locks(exclude)
                    if exclusive or d is None or d.get("exclusive", True)]
        held = conflicts()
        if held:
            return held[0]
        lock_id = secrets.token_hex(8)
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "what": what,
                           "exclusive": exclusive}).encode()
        self.put_object(f"locks/{lock_id}", body)
        held = conflicts(exclude=lock_id)
        if held:
            self.delete_object(f"locks/{lock_id}")
            return held[0]
        self._lock_id, self._lock_body = lock_id, body
        self._lock_stop = threading.Event()
        self._lock_thread = threading.Thread(target=self._refresh_lock, daemon=True,
                                             name="rpfs-s3-lock")
        self._lock_thread.start()
        return None

    def _refresh_lock(self) -> None:
        while not self._lock_stop.wait(LOCK_REFRESH):
            try:
                self.delete_object(f"locks/{self._lock_id}")
                self.put_object(f"locks/{self._lock_id}", self._lock_body)
            except Exception as e:
                log.warning("%s: could not refresh the repository lock: %s", self.address, e)

    def _release(self) -> None:
        self._lock_stop.set()
        self._lock_thread.join()
        try:
            self.delete_object(f"locks/{self._lock_id}")
        except (S3Error, OSError) as e:   # the next writer on this host sees our pid is gone
            log.info("%s: could not remove the repository lock: %s", self.address, e)

    def _live_locks(self, exclude: str | None = None) -> list[tuple[str, dict | None, str]]:
        """(id, body or None, "what pid N on HOST") of the live lock objects. A lock object
        without ``exclusive`` was written by an rpfs that had only exclusive locks."""
        return [(n, d, f"{d['what']} pid {d['pid']} on {d['host']}" if d else f"lock object locks/{n}")
                for n, d in self._live("locks", exclude)]

    def _live(self, kind: str, exclude: str | None) -> list[tuple[str, dict | None]]:
        """The objects under ``kind/`` of live processes (name, their JSON or None if it
        does not parse): not older than ``LOCK_STALE`` s, and not of a process of this host
        that has died (those are deleted)."""
        now = datetime.now(timezone.utc)
        out = []
        for name, _, modified in self._list(kind):
            if name == exclude or (now - modified).total_seconds() > LOCK_STALE:
                continue
            raw = self.get_object(f"{kind}/{name}")
            if raw is None:
                continue    # gone since the listing (rewritten under a new name, or released)
            try:
                d = json.loads(raw)
                if d["host"] == socket.gethostname() and not _alive(int(d["pid"])):
                    self.delete_object(f"{kind}/{name}")
                    continue
            except (ValueError, KeyError, TypeError):
                d = None
            out.append((name, d))
        return out

    # --- readers on any machine ----------------------------------------------------------
    def hold(self, names: list[str]) -> None:
        self.publish_reader(names)

    def live_holds(self) -> dict[str, str]:
        return self.live_readers()

    def publish_reader(self, holds: list[str]) -> None:
        """Say in the bucket which recovery points (``vm/rp``) this process reads files of,
        so that a prune on any machine keeps them (``live_readers``): an object
        ``readers/<id>`` (host, pid, holds), rewritten every ``LOCK_REFRESH`` s under a new
        name before the old one is deleted (it is never absent), until ``withdraw_reader``."""
        with self._reader_lock:
            self._reader_body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                            "holds": sorted(holds)}).encode()
            self._rotate_reader()
            if self._reader_thread is None:
                self._reader_thread = threading.Thread(target=self._refresh_reader, daemon=True,
                                                       name="rpfs-s3-reader")
                self._reader_thread.start()

    def _rotate_reader(self) -> None:
        new = secrets.token_hex(8)
        self.put_object(f"readers/{new}", self._reader_body)
        old, self._reader_id = self._reader_id, new
        if old:
            self.delete_object(f"readers/{old}")

    def _refresh_reader(self) -> None:
        while not self._reader_stop.wait(LOCK_REFRESH):
            with self._reader_lock:
                try:
                    self._rotate_reader()
                except Exception as e:
                    log.warning("%s: could not refresh this reader's object: %s", self.address, e)

    def withdraw_reader(self) -> None:
        if self._reader_thread is not None:
            self._reader_stop.set()
            self._reader_thread.join()
            self._reader_thread = None
        with self._reader_lock:
            rid, self._reader_id = self._reader_id, None
        if rid:
            try:
                self.delete_object(f"readers/{rid}")
            except (S3Error, OSError) as e:   # stale after LOCK_STALE s; dead pids are seen at once here
                log.info("%s: could not remove this reader's object: %s", self.address, e)

    def live_readers(self) -> dict[str, str]:
        """``vm/rp`` -> who reads it, for the recovery points live readers on any machine
        (this process excluded) have files of open."""
        held: dict[str, str] = {}
        for _, d in self._live("readers", self._reader_id):
            if d and isinstance(d.get("holds"), list):
                for h in d["holds"]:
                    held.setdefault(str(h), f"pid {d['pid']} on {d['host']}")
        return held

    def clean_staging(self) -> int:
        """Temp files and unfinished multipart uploads a killed writer left (caller holds
        the exclusive lock)."""
        n = super().clean_staging()
        r = self._call("list uploads", self.s3.list_multipart_uploads, Bucket=self.bucket,
                       Prefix=self._key("packs") + "/")
        for u in r.get("Uploads", []):
            try:
                self._call("abort upload", self.s3.abort_multipart_upload, Bucket=self.bucket,
                           Key=u["Key"], UploadId=u["UploadId"])
                n += 1
            except (FileNotFoundError, S3Error):
                pass
        return n

    def close(self) -> None:
        self.withdraw_reader()
        self._ahead.shutdown(wait=True, cancel_futures=True)
        try:
            self.s3.close()
        except Exception:
            pass
