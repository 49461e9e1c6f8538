"""Object store: images, thumbnails, model weights and index files, behind one interface.

Two backends share :class:`ObjectStore`:

- :class:`LocalObjectStore` keeps each object as a file under a root folder. Every write goes to
  a temporary file in the target's folder, is fsynced and then renamed over the target
  (``os.replace``), so a reader sees the old object or the new one, never half of one.
- :class:`S3ObjectStore` talks to MinIO or any S3 endpoint through the ``minio`` SDK (imported
  lazily). S3 PUTs are atomic by themselves; large or unknown-length streams go up as multipart
  uploads, which the SDK aborts on failure.

Keys are ``/``-separated relative names (``images/ab/<sha256>.png``); :func:`validate_key`
refuses anything that could escape the store or mean different things on different backends.
Secrets (S3 keys) live only inside the SDK client: no message, repr or log line contains them.
"""
from __future__ import annotations

import abc
import builtins
import contextlib
import hashlib
import io
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from medq.errors import MedQError

if TYPE_CHECKING:
    from medq.settings import Settings

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024        # S3's limit on an object name (UTF-8 bytes)
MAX_SEGMENT_BYTES = 255     # common file-name limit; keeps keys portable to the local backend
CHUNK = 1024 * 1024         # streaming copy chunk (bytes)
_TMP_PREFIX = ".medq-tmp-"  # in-flight local writes; never listed, never a valid key segment
_EXT = re.compile(r"^[A-Za-z0-9]{1,16}$")


class ObjectStoreError(MedQError):
    """The object store cannot do what was asked (unreachable, denied, conflicting key...)."""


class InvalidKeyError(ObjectStoreError):
    """A key that could escape the store or is not portable; the message names the key."""


class ObjectNotFoundError(ObjectStoreError):
    """No object under the key (or no objects under a folder prefix)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What :meth:`ObjectStore.stat` reports. `size` in bytes; `etag` is an opaque version tag
    that changes when the object is replaced (S3: the server's ETag; local: inode, mtime and size,
    not a content hash); `mtime` in POSIX seconds (UTC)."""

    key: str
    size: int
    etag: str
    mtime: float


# -- keys -------------------------------------------------------------------------------------

def _show(key: str) -> str:
    """The key as it appears in messages: repr (control characters visible), shortened."""
    return repr(key) if len(key) <= 200 else f"{key[:200]!r}... ({len(key)} characters)"


def _key_problem(key: str) -> str | None:
    if key == "":
        return "it is empty"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid Unicode text (lone surrogate)"
    if size > MAX_KEY_BYTES:
        return f"it is {size} bytes long (limit {MAX_KEY_BYTES})"
    for i, ch in enumerate(key):
        cat = unicodedata.category(ch)
        # Control, format (invisible), unassigned, private-use and line/paragraph separators.
        if cat[0] == "C" or cat in ("Zl", "Zp"):
            return f"it contains the control or invisible character U+{ord(ch):04X} at {i}"
    if "\\" in key:
        return "it contains a backslash (keys use '/')"
    if key.startswith("/"):
        return "it is an absolute path (leading '/')"
    if re.match(r"^[A-Za-z]:", key):
        return "it looks like a drive-letter path"
    for seg in key.split("/"):
        if seg == "":
            return "it has an empty segment ('//' or a trailing '/')"
        if seg in (".", ".."):
            return f"it has a {seg!r} segment"
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"a segment is longer than {MAX_SEGMENT_BYTES} bytes"
        if seg.startswith(_TMP_PREFIX):
            return f"a segment starts with the reserved {_TMP_PREFIX!r}"
    return None


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is a safe, portable object key, else raise
    :class:`InvalidKeyError` naming it. Rejected: non-strings, empty keys, ``.``/``..`` segments,
    absolute or drive paths, backslashes, control/invisible characters, ``//`` or a trailing
    ``/``, keys over 1024 UTF-8 bytes or with a segment over 255 bytes."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"object key must be a string, got {type(key).__name__}: {key!r:.100}")
    problem = _key_problem(key)
    if problem:
        raise InvalidKeyError(f"invalid object key {_show(key)}: {problem}")
    return key


def _validate_prefix(prefix: str, *, allow_empty: bool = True) -> str:
    """A listing/folder prefix: a key, possibly ending in one '/', or '' (everything)."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"object key prefix must be a string, got {type(prefix).__name__}")
    if prefix == "" and allow_empty:
        return prefix
    body = prefix.removesuffix("/")
    problem = _key_problem(body)
    if problem:
        raise InvalidKeyError(f"invalid object key prefix {_show(prefix)}: {problem}")
    return prefix


def content_key(data: bytes, prefix: str = "images", ext: str = "png") -> str:
    """Content-addressed key ``<prefix>/<first 2 hex>/<sha256>.<ext>``: the same bytes always get
    the same key, so writing them twice stores them once."""
    digest = hashlib.sha256(data).hexdigest()
    ext = ext.lstrip(".")
    if ext and not _EXT.match(ext):
        raise InvalidKeyError(f"invalid extension {ext!r} for a content key (letters/digits only)")
    name = f"{digest}.{ext}" if ext else digest
    prefix = prefix.strip("/")
    return validate_key(f"{prefix}/{digest[:2]}/{name}" if prefix else f"{digest[:2]}/{name}")


def _copy(src: IO[bytes], dst: IO[bytes], length: int, key: str) -> int:
    """Copy `length` bytes (all when -1) from `src` to `dst`; a short stream is an error."""
    copied = 0
    while length < 0 or copied < length:
        want = CHUNK if length < 0 else min(CHUNK, length - copied)
        block = src.read(want)
        if not block:
            break
        dst.write(block)
        copied += len(block)
    if 0 <= length != copied:
        raise ObjectStoreError(f"stream for object {_show(key)} ended after {copied} of "
                               f"{length} bytes; nothing was written")
    return copied


# -- interface --------------------------------------------------------------------------------

class ObjectStore(abc.ABC):
    """Put/get/list/delete of whole objects by key (see module docstring).

    Every method validates its key first (:func:`validate_key`). Missing objects raise
    :class:`ObjectNotFoundError`; other failures :class:`ObjectStoreError`."""

    backend: str = "abstract"

    # primitives
    @abc.abstractmethod
    def put_stream(self, key: str, fileobj: BinaryIO, length: int = -1,
                   content_type: str | None = None) -> str:
        """Store `length` bytes read from `fileobj` (-1: until EOF) under `key`; returns `key`.
        Atomic: readers see the old object or the whole new one."""

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A streaming binary reader of the object; use it as a context manager."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with the string `prefix` (not only at '/'), sorted by UTF-8 bytes."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abc.abstractmethod
    def url(self, key: str, expiry_s: int | None = None) -> str:
        """A URL a client can GET the object from: presigned ``http(s)://`` on S3 (valid
        `expiry_s` seconds, default ``objects.presign_expiry_s``), ``file://`` locally."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise :class:`ObjectStoreError` unless the store is reachable and usable."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the objects live, for messages (never contains secrets)."""

    # derived operations
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        view = memoryview(data)
        return self.put_stream(key, io.BytesIO(view), view.nbytes, content_type)

    def put_file(self, key: str, path: str | os.PathLike, content_type: str | None = None) -> str:
        validate_key(key)
        try:
            fh = open(path, "rb")  # noqa: SIM115 (closed by the `with` below)
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {path} to store as {_show(key)}: {exc}") from exc
        with fh:
            return self.put_stream(key, fh, os.fstat(fh.fileno()).st_size, content_type)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def download(self, key: str, path: str | os.PathLike) -> Path:
        """Write the object to `path` atomically (temp file in the same folder, fsync, rename):
        `path` holds its old content or the whole object, never part of it."""
        path = Path(path)
        with self.open(key) as src:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
            except OSError as exc:
                raise ObjectStoreError(f"cannot download {_show(key)} to {path}: {exc}") from exc
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o644)  # mkstemp makes 0600
                os.replace(tmp, path)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                if isinstance(exc, OSError):  # disk full, target is a folder...
                    raise ObjectStoreError(f"cannot download {_show(key)} to {path}: {exc}") from exc
                raise
        return path

    def put_folder(self, prefix: str, folder: str | os.PathLike) -> builtins.list[str]:
        """Mirror the files under `folder` to ``<prefix>/<relative path>`` and delete other keys
        under ``<prefix>/`` (so :meth:`get_folder` returns exactly this folder). Every name is
        validated before anything is written. Returns the keys written, sorted."""
        base = _validate_prefix(prefix, allow_empty=False).rstrip("/")
        folder = Path(folder)
        if not folder.is_dir():
            raise ObjectStoreError(f"cannot upload {folder} to {base!r}: not a folder")
        files: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(folder):  # does not follow folder links
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_file():
                    rel = path.relative_to(folder).as_posix()
                    files[validate_key(f"{base}/{rel}")] = path
        for key, path in files.items():
            self.put_file(key, path)
        for stale in [k for k in self.list(base + "/") if k not in files]:
            self.delete(stale)
        return sorted(files)

    def get_folder(self, prefix: str, folder: str | os.PathLike) -> Path:
        """Download every object under ``<prefix>/`` into `folder` (relative paths kept).
        Everything is fetched into a temporary sibling folder first, so a failure leaves
        `folder` untouched; a new `folder` appears in one rename. Files already in `folder`
        that are not in the store are kept."""
        base = _validate_prefix(prefix, allow_empty=False).rstrip("/") + "/"
        keys = list(self.list(base))
        if not keys:
            raise ObjectNotFoundError(f"no objects under {base!r} in {self.location}")
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=folder.parent))
        try:
            for key in keys:
                self.download(key, staging / key[len(base):])
            if not folder.exists():
                os.replace(staging, folder)
            else:
                for key in keys:
                    target = folder / key[len(base):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / key[len(base):], target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location})"


# -- local folder -----------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    """Make a rename durable; some filesystems refuse to fsync a folder, which is harmless."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalObjectStore(ObjectStore):
    """Objects as files under `root` (created if missing unless `create` is false). Keys map to
    relative paths; a key that resolves outside `root` through a symlink is refused. A key cannot
    be both an object and a folder of other objects here (``a`` and ``a/b``), unlike on S3.
    `content_type` is accepted and ignored (files carry none)."""

    backend = "local"

    def __init__(self, root: str | os.PathLike, *, create: bool = True, durable: bool = False):
        self.root = Path(root).expanduser().resolve()
        # Writes are always atomic (temp file + rename). `durable` adds fsync of the file and its
        # folder, so an object also survives a power cut; it costs ~10-30 ms per object.
        self.durable = durable
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ObjectStoreError(f"cannot create the object store folder {self.root}: "
                                       f"{exc}") from exc

    @property
    def location(self) -> str:
        return self.root.as_uri()

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise ObjectStoreError(f"object store folder {self.root} is missing or not writable")

    def _inside(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == self.root or self.root in real.parents

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = self.root.joinpath(*key.split("/"))
        if not self._inside(path):
            raise InvalidKeyError(f"object key {_show(key)} resolves outside the store root "
                                  f"{self.root} (through a symbolic link)")
        return path

    def put_stream(self, key: str, fileobj: BinaryIO, length: int = -1,
                   content_type: str | None = None) -> str:
        path = self._path(key)
        try:
            for attempt in range(3):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
                try:
                    out = open(tmp, "xb")  # noqa: SIM115 (closed by `with out`)
                    break
                except FileNotFoundError:  # a concurrent delete pruned the folder; retry
                    if attempt == 2:
                        raise
            try:
                with out:
                    _copy(fileobj, out, length, key)
                    out.flush()
                    if self.durable:
                        os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        except (NotADirectoryError, FileExistsError) as exc:
            raise ObjectStoreError(f"cannot store {_show(key)}: a parent of it is already an "
                                   f"object in {self.root}") from exc
        except IsADirectoryError as exc:
            raise ObjectStoreError(f"cannot store {_show(key)}: it is a folder of other objects "
                                   f"in {self.root}") from exc
        except OSError as exc:
            raise ObjectStoreError(f"cannot store {_show(key)} in {self.root}: {exc}") from exc
        if self.durable:
            _fsync_dir(path.parent)
        log.debug("put %s (%s)", key, self.root)
        return key

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object {_show(key)} in {self.root}") from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {_show(key)} in {self.root}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object {_show(key)} in {self.root}") from None
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {_show(key)} in {self.root} (it is a folder)")
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime,
                          etag=f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}")

    def list(self, prefix: str = "") -> Iterator[str]:
        prefix = _validate_prefix(prefix)
        rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*rel.split("/")) if rel else self.root
        if not self._inside(start):
            raise InvalidKeyError(f"object key prefix {_show(prefix)} resolves outside the store "
                                  f"root {self.root} (through a symbolic link)")
        yield from self._walk(start, rel, prefix)

    def _walk(self, folder: Path, rel: str, prefix: str) -> Iterator[str]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        # Sorting a folder's entries with '/' appended to sub-folder names yields the keys in
        # global byte order without collecting the whole tree.
        items = []
        for entry in entries:
            key = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name.startswith(_TMP_PREFIX) or _key_problem(key):
                continue  # in-flight writes and foreign names are not objects
            if entry.is_dir(follow_symlinks=False):
                items.append((key + "/", key, True))
            elif entry.is_file(follow_symlinks=False):
                items.append((key, key, False))
        for _, key, is_dir in sorted(items):
            if is_dir:
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(folder / key.rsplit("/", 1)[-1], key, prefix)
            elif key.startswith(prefix):
                yield key

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a folder of other objects, not an object
        except OSError as exc:
            raise ObjectStoreError(f"cannot delete {_show(key)} in {self.root}: {exc}") from exc
        # Prune folders left empty so that their names can become object keys again.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        log.debug("deleted %s (%s)", key, self.root)

    def url(self, key: str, expiry_s: int | None = None) -> str:
        _check_expiry(expiry_s)
        return self._path(key).as_uri()


def _check_expiry(expiry_s: int | None) -> None:
    if expiry_s is not None and not 1 <= int(expiry_s) <= 7 * 24 * 3600:
        raise ObjectStoreError(f"presigned URL expiry must be 1..604800 seconds, got {expiry_s}")


# -- S3 / MinIO -------------------------------------------------------------------------------

def _secret(value: Any) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else (value or "")


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """'host:port' plus TLS flag from 'host:port' or 'http(s)://host:port'."""
    raw = endpoint.strip()
    m = re.match(r"^(https?)://(.*)$", raw, re.IGNORECASE)
    if m:
        secure, raw = m.group(1).lower() == "https", m.group(2)
    raw = raw.rstrip("/")
    if not raw or "/" in raw or "@" in raw:
        raise ObjectStoreError(f"invalid S3 endpoint {endpoint!r} (objects.s3_endpoint): expected "
                               "host:port, optionally with http:// or https://")
    return raw, secure


class _SourceReader:
    """Wraps the caller's stream for an upload: a read error or a stream shorter than the
    announced length becomes an :class:`ObjectStoreError` (not an 'unreachable endpoint')."""

    def __init__(self, fileobj: BinaryIO, length: int, key: str):
        self._fileobj, self._length, self._key, self._read = fileobj, length, key, 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._fileobj.read(size)
        except Exception as exc:
            raise ObjectStoreError(f"reading the data for {_show(self._key)} failed: {exc}") from exc
        self._read += len(data)
        if not data and 0 <= self._read < self._length and size != 0:
            raise ObjectStoreError(f"stream for object {_show(self._key)} ended after "
                                   f"{self._read} of {self._length} bytes; nothing was written")
        return data


class _ResponseReader(io.RawIOBase):
    """Raw reader over a urllib3 response that returns the connection to the pool on close."""

    def __init__(self, response: Any, on_error: Callable[[Exception], Exception]):
        self._response = response
        self._on_error = on_error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._response.read(len(buffer))
        except Exception as exc:  # truncated body, reset connection...
            raise self._on_error(exc) from exc
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._response.close()
                self._response.release_conn()
            finally:
                super().close()


class S3ObjectStore(ObjectStore):
    """Objects in one bucket of MinIO or any S3-compatible endpoint.

    `endpoint` is ``host:port`` (a leading ``http://``/``https://`` sets `secure`). The bucket is
    created if missing. Connection failures raise one :class:`ObjectStoreError` naming the
    endpoint after `connect_timeout_s` per try and `retries` retries."""

    backend = "s3"

    def __init__(self, endpoint: str, bucket: str, *, access_key: Any = "", secret_key: Any = "",
                 region: str = "us-east-1", secure: bool = False,
                 presign_expiry_s: int = 7 * 24 * 3600, connect_timeout_s: float = 3.0,
                 read_timeout_s: float = 120.0, retries: int = 2, part_size_mb: int = 16,
                 create_bucket: bool = True):
        import urllib3
        from minio import Minio

        self.endpoint, self.secure = _split_endpoint(endpoint, secure)
        self.bucket = bucket
        self.region = region
        self.presign_expiry_s = presign_expiry_s
        self.part_size = max(5, int(part_size_mb)) * 1024 * 1024
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            retries=urllib3.Retry(total=retries, connect=retries, read=retries,
                                  backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            maxsize=10)
        try:
            self._client = Minio(self.endpoint, access_key=_secret(access_key) or None,
                                 secret_key=_secret(secret_key) or None, region=region,
                                 secure=self.secure, http_client=http)
        except ValueError as exc:
            raise ObjectStoreError(f"invalid S3 endpoint {endpoint!r} (objects.s3_endpoint): "
                                   f"{exc}") from exc
        if create_bucket:
            self._ensure_bucket()

    @classmethod
    def from_settings(cls, settings: Settings, bucket: str | None = None,
                      **kwargs: Any) -> S3ObjectStore:
        """The store of ``settings.objects`` (endpoint, keys, timeouts), on `bucket` if given
        (e.g. an ingest source bucket) else ``objects.s3_bucket``."""
        o = settings.objects
        return cls(o.s3_endpoint, bucket or o.s3_bucket, access_key=o.s3_access_key,
                   secret_key=o.s3_secret_key, region=o.s3_region, secure=o.s3_secure,
                   presign_expiry_s=o.presign_expiry_s, connect_timeout_s=o.s3_connect_timeout_s,
                   read_timeout_s=o.s3_read_timeout_s, retries=o.s3_retries,
                   part_size_mb=o.s3_part_size_mb, **kwargs)

    @property
    def url_base(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    @property
    def location(self) -> str:
        return f"s3://{self.bucket} at {self.url_base}"

    # errors ---------------------------------------------------------------------------------
    def _translate(self, exc: Exception, action: str, key: str | None = None) -> Exception:
        """One MedQ error for an SDK/HTTP failure (no secrets: none are in these messages)."""
        from minio.error import MinioException, S3Error

        if isinstance(exc, MedQError):
            return exc
        if isinstance(exc, S3Error):
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound") and key is not None:
                return ObjectNotFoundError(f"no object {_show(key)} in {self.location}")
            if exc.code == "NoSuchBucket":
                return ObjectStoreError(f"bucket {self.bucket!r} does not exist at {self.url_base}")
            if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return ObjectStoreError(
                    f"{self.location}: access denied while trying to {action} ({exc.code}); "
                    "check objects.s3_access_key and objects.s3_secret_key")
            return ObjectStoreError(f"{self.location}: {action} failed: {exc.code}: {exc.message}")
        if isinstance(exc, ValueError):  # SDK argument checks (bucket name...)
            return ObjectStoreError(f"{self.location}: cannot {action}: {exc}")
        if isinstance(exc, MinioException):  # answered, but not like an S3 server
            return ObjectStoreError(f"S3 endpoint {self.url_base} gave an invalid answer while "
                                    f"trying to {action}: {str(exc)[:300]}; is objects.s3_endpoint "
                                    "an S3/MinIO server?")
        reason = getattr(exc, "reason", None) or exc
        text = str(reason)
        if "refused" in text.lower():
            text = "connection refused"
        elif "timed out" in text.lower() or "timeout" in type(reason).__name__.lower():
            text = "connection timed out"
        elif len(text) > 300:
            text = text[:300] + "..."
        return ObjectStoreError(
            f"S3 endpoint {self.url_base} is unreachable ({text}) while trying to {action}; "
            "start it with `medq services up s3` or fix objects.s3_endpoint")

    @contextlib.contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        import urllib3
        from minio.error import MinioException

        try:
            yield
        except (MinioException, urllib3.exceptions.HTTPError, ValueError, OSError) as exc:
            raise self._translate(exc, action, key) from exc

    def _ensure_bucket(self) -> None:
        from minio.error import S3Error

        with self._errors(f"open bucket {self.bucket!r}"):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, location=self.region)
                log.info("created bucket %s at %s", self.bucket, self.url_base)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # a concurrent creator won: fine
                    raise

    def check(self) -> None:
        with self._errors(f"check bucket {self.bucket!r}"):
            if not self._client.bucket_exists(self.bucket):
                raise ObjectStoreError(f"bucket {self.bucket!r} does not exist at {self.url_base}")

    # operations -----------------------------------------------------------------------------
    def put_stream(self, key: str, fileobj: BinaryIO, length: int = -1,
                   content_type: str | None = None) -> str:
        validate_key(key)
        content_type = (content_type or mimetypes.guess_type(key)[0]
                        or "application/octet-stream")
        data: BinaryIO | _SourceReader
        if 0 <= length <= self.part_size:
            # Read it whole so a short stream is caught before any request is sent.
            buffer = io.BytesIO()
            _copy(fileobj, buffer, length, key)
            buffer.seek(0)
            data = buffer
        else:
            data = _SourceReader(fileobj, length, key)
        with self._errors(f"store {_show(key)}", key):
            # Unknown or large length: multipart upload in part_size parts; the SDK aborts
            # the upload if anything fails, so no partial object ever becomes visible.
            self._client.put_object(
                self.bucket, key,
                data,  # type: ignore[arg-type]  # minio types it BinaryIO; it only calls read()
                length, content_type=content_type, part_size=self.part_size,
                num_parallel_uploads=2)
        log.debug("put %s (%s)", key, self.location)
        return key

    def open(self, key: str) -> BinaryIO:
        validate_key(key)
        with self._errors(f"read {_show(key)}", key):
            response = self._client.get_object(self.bucket, key)
        raw = _ResponseReader(response, lambda e: self._translate(e, f"read {_show(key)}", key))
        return io.BufferedReader(raw, CHUNK)

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._errors(f"stat {_show(key)}", key):
            st = self._client.stat_object(self.bucket, key)
        mtime = st.last_modified.timestamp() if st.last_modified else 0.0
        return ObjectInfo(key=key, size=int(st.size or 0), etag=(st.etag or "").strip('"'),
                          mtime=mtime)

    def list(self, prefix: str = "") -> Iterator[str]:
        prefix = _validate_prefix(prefix)
        with self._errors(f"list {prefix!r}"):
            # S3 lists keys in UTF-8 byte order already.
            for obj in self._client.list_objects(self.bucket, prefix=prefix or None,
                                                 recursive=True):
                if not obj.is_dir:
                    yield obj.object_name

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._errors(f"delete {_show(key)}", key):
            self._client.remove_object(self.bucket, key)  # S3 answers 204 for a missing key
        log.debug("deleted %s (%s)", key, self.location)

    def url(self, key: str, expiry_s: int | None = None) -> str:
        validate_key(key)
        _check_expiry(expiry_s)
        seconds = int(expiry_s if expiry_s is not None else self.presign_expiry_s)
        with self._errors(f"presign {_show(key)}", key):
            return self._client.presigned_get_object(self.bucket, key,
                                                     expires=timedelta(seconds=seconds))

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.location})"


# -- factory ----------------------------------------------------------------------------------

def _local_from_settings(settings: Settings, create: bool) -> ObjectStore:
    return LocalObjectStore(settings.objects_root, create=create,
                            durable=settings.objects.local_fsync)


def _s3_from_settings(settings: Settings, create: bool) -> ObjectStore:
    return S3ObjectStore.from_settings(settings, create_bucket=create)


BACKENDS: dict[str, Callable[[Settings, bool], ObjectStore]] = {
    "local": _local_from_settings,
    "s3": _s3_from_settings,
}


def create_object_store(settings: Settings, *, create: bool = True) -> ObjectStore:
    """The store named by ``settings.objects.backend`` (``local`` or ``s3``). With `create`, the
    local folder or the S3 bucket is created if missing (else :meth:`ObjectStore.check` reports
    it). An unreachable S3 endpoint raises :class:`ObjectStoreError` naming it."""
    name = str(settings.objects.backend).strip().lower()
    factory = BACKENDS.get(name)
    if factory is None:
        raise ObjectStoreError(f"unknown object store backend {settings.objects.backend!r} "
                               f"(setting objects.backend); valid: {', '.join(sorted(BACKENDS))}")
    return factory(settings, create)
