"""One object-store suite, run on the local folder backend and on a real S3 server (moto via
infra/s3.sh); plus key validation with hostile keys and the unreachable-endpoint error."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import threading
import time
import urllib.request

import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from medq.errors import MedQError
from medq.settings import load_settings
from medq.storage.objects import (
    InvalidKeyError,
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStoreError,
    S3ObjectStore,
    content_key,
    create_object_store,
    validate_key,
)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.services)])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return request.getfixturevalue("s3_store")


def fetch(url: str) -> bytes:
    if url.startswith("file://"):
        with urllib.request.urlopen(url) as resp:
            return resp.read()
    resp = requests.get(url, timeout=10)
    resp.raise_for_status()
    return resp.content


class Exploding(io.RawIOBase):
    """A stream that fails after `after` bytes (a network drop, a dying disk...)."""

    def __init__(self, data: bytes, after: int):
        self.data, self.after, self.pos = data, after, 0

    def readable(self):
        return True

    def readinto(self, buf):
        if self.pos >= self.after:
            raise OSError("simulated read failure")
        n = min(len(buf), self.after - self.pos)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


class Slow(io.RawIOBase):
    """Hands out 256 KiB per read with a pause, so a write takes a while."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self):
        return True

    def readinto(self, buf):
        time.sleep(0.01)
        n = min(len(buf), 256 * 1024, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


# -- the shared suite ---------------------------------------------------------------------------

def test_put_get_exists_stat(store):
    assert not store.exists("a/b.bin")
    assert store.put_bytes("a/b.bin", b"hello") == "a/b.bin"
    assert store.exists("a/b.bin")
    assert store.get_bytes("a/b.bin") == b"hello"
    info = store.stat("a/b.bin")
    assert info.key == "a/b.bin" and info.size == 5 and info.etag
    assert abs(info.mtime - time.time()) < 3600
    store.put_bytes("a/b.bin", b"hello, again")  # overwrite
    assert store.get_bytes("a/b.bin") == b"hello, again"
    new = store.stat("a/b.bin")
    assert new.size == 12 and new.etag != info.etag
    assert store.put_bytes("empty", b"") == "empty" and store.get_bytes("empty") == b""


def test_missing_objects(store):
    for call in (store.get_bytes, store.stat, store.open):
        with pytest.raises(ObjectNotFoundError, match="nope/x.png"):
            call("nope/x.png")
    assert not store.exists("nope/x.png")
    store.delete("nope/x.png")  # idempotent


def test_list_sorted_with_string_prefix(store):
    keys = ["b/2", "a-c", "a/b/c", "a/b", "images/ab/1.png", "images/abc/2.png", "images/b/3.png",
            "z", "ä/unicode"]
    # 'a/b' and 'a/b/c' cannot both exist on a folder backend; keep what each backend can hold.
    if isinstance(store, LocalObjectStore):
        keys.remove("a/b")
    for k in keys:
        store.put_bytes(k, k.encode())
    assert list(store.list()) == sorted(keys, key=lambda k: k.encode())
    assert list(store.list("images/ab")) == ["images/ab/1.png", "images/abc/2.png"]
    assert list(store.list("images/ab/")) == ["images/ab/1.png"]
    assert list(store.list("a")) == sorted([k for k in keys if k.startswith("a")])
    assert list(store.list("nothing/")) == []


def test_delete_is_idempotent(store):
    store.put_bytes("d/one", b"1")
    store.put_bytes("d/two", b"2")
    store.delete("d/one")
    store.delete("d/one")
    assert not store.exists("d/one")
    assert list(store.list("d/")) == ["d/two"]
    store.delete("d/two")
    assert list(store.list()) == []
    store.put_bytes("d", b"a key where a folder was")  # the emptied folder is gone
    assert store.get_bytes("d") == b"a key where a folder was"


def test_streaming_large_unknown_length(store):
    data = os.urandom(11 * 1024 * 1024 + 17)  # > 2 parts of 5 MiB: multipart on S3
    store.put_stream("big/blob", io.BytesIO(data))  # length unknown
    assert store.stat("big/blob").size == len(data)
    digest = hashlib.sha256()
    with store.open("big/blob") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    store.put_stream("big/known", io.BytesIO(data), len(data))
    assert store.get_bytes("big/known") == data


def test_short_or_failing_stream_writes_nothing(store):
    store.put_bytes("s/keep", b"old content")
    with pytest.raises(ObjectStoreError, match="ended after 3 of 10 bytes"):
        store.put_stream("s/keep", io.BytesIO(b"abc"), 10)
    data = os.urandom(6 * 1024 * 1024)
    with pytest.raises(MedQError):
        store.put_stream("s/keep", io.BufferedReader(Exploding(data, 5 * 1024 * 1024 + 3)))
    with pytest.raises(MedQError):
        store.put_stream("s/new", io.BufferedReader(Exploding(data, 100)), len(data))
    assert store.get_bytes("s/keep") == b"old content"
    assert not store.exists("s/new")
    assert list(store.list()) == ["s/keep"]
    if isinstance(store, LocalObjectStore):  # no temp files left behind
        assert sorted(p.name for p in (store.root / "s").iterdir()) == ["keep"]


def test_readers_never_see_half_an_object(store):
    a, b = b"A" * (3 * 1024 * 1024), b"B" * (3 * 1024 * 1024 + 5)
    store.put_bytes("atomic", a)
    seen, stop, errors = set(), threading.Event(), []

    def reader():
        while not stop.is_set():
            try:
                seen.add(hashlib.sha256(store.get_bytes("atomic")).hexdigest())
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(4):  # slow writers: a non-atomic store would be caught mid-write
            data = b if i % 2 == 0 else a
            store.put_stream("atomic", io.BufferedReader(Slow(data), 256 * 1024), len(data))
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert len(seen) >= 1
    assert seen <= {hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()}


def test_put_file_and_atomic_download(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    store.put_file("files/src.bin", src)
    dst = tmp_path / "out" / "dst.bin"
    assert store.download("files/src.bin", dst) == dst
    assert dst.read_bytes() == src.read_bytes()
    dst.write_bytes(b"previous")
    with pytest.raises(ObjectNotFoundError):
        store.download("files/missing.bin", dst)
    assert dst.read_bytes() == b"previous"  # untouched
    assert sorted(p.name for p in dst.parent.iterdir()) == ["dst.bin"]  # no temp file
    with pytest.raises(ObjectStoreError, match="cannot read"):
        store.put_file("files/x", tmp_path / "does-not-exist")
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(ObjectStoreError, match="cannot download"):
        store.download("files/src.bin", tmp_path / "a-folder")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".medq-tmp")]


def test_url_fetch(store):
    data = os.urandom(1000)
    store.put_bytes("u/img.png", data)
    url = store.url("u/img.png", expiry_s=300)
    assert url.startswith("file://" if isinstance(store, LocalObjectStore) else "http://")
    assert fetch(url) == data
    assert fetch(store.url("u/img.png")) == data  # default expiry
    with pytest.raises(ObjectStoreError, match="expiry"):
        store.url("u/img.png", expiry_s=10**9)


def test_folder_round_trip(store, tmp_path):
    src = tmp_path / "model"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "config.json").write_text('{"a": 1}')
    (src / "sub" / "weights.bin").write_bytes(os.urandom(50_000))
    (src / "sub" / "deeper" / "x.txt").write_text("x")
    keys = store.put_folder("models/v1", src)
    assert keys == ["models/v1/config.json", "models/v1/sub/deeper/x.txt",
                    "models/v1/sub/weights.bin"]
    out = store.get_folder("models/v1", tmp_path / "restored")
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    want = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert got == want
    # A re-upload mirrors the folder: removed files disappear from the store.
    (src / "sub" / "deeper" / "x.txt").unlink()
    store.put_folder("models/v1", src)
    assert list(store.list("models/v1/")) == ["models/v1/config.json", "models/v1/sub/weights.bin"]
    # Into an existing folder: files are replaced, nothing half-written.
    (out / "config.json").write_text("stale")
    store.get_folder("models/v1/", out)
    assert (out / "config.json").read_text() == '{"a": 1}'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".medq-tmp")]
    with pytest.raises(ObjectNotFoundError, match="models/v2/"):
        store.get_folder("models/v2", tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_content_keys(store):
    data = b"\x89PNG fake"
    key = content_key(data)
    digest = hashlib.sha256(data).hexdigest()
    assert key == f"images/{digest[:2]}/{digest}.png"
    assert content_key(data, prefix="thumbs", ext=".jpg") == f"thumbs/{digest[:2]}/{digest}.jpg"
    store.put_bytes(key, data)
    store.put_bytes(content_key(data), data)  # same bytes, same key: stored once
    assert list(store.list("images/")) == [key]
    with pytest.raises(InvalidKeyError):
        content_key(data, ext="p/ng")


HOSTILE_KEYS = [
    "", "/etc/passwd", "../x", "a/../../x", "a/..", "..", ".", "./a", "a/./b", "a//b", "a/",
    "//a", "a\\b", "..\\x", "C:/x", "c:\\windows", "a\x00b", "a\nb", "tab\tkey", "del\x7f",
    "a\u202eb", "zero\u200bwidth", "line\u2028sep", "x" * 1025, "é" * 513, "a/" + "y" * 256,
    ".medq-tmp-123", "a/.medq-tmp-x/b", "\ud800",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=range(len(HOSTILE_KEYS)))
def test_hostile_keys_rejected_everywhere(store, key, tmp_path):
    before = list(store.list())
    calls = [lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key),
             lambda: store.exists(key), lambda: store.stat(key), lambda: store.delete(key),
             lambda: store.url(key), lambda: store.open(key),
             lambda: store.put_stream(key, io.BytesIO(b"x"), 1),
             lambda: store.download(key, tmp_path / "d")]
    for call in calls:
        with pytest.raises(InvalidKeyError) as info:
            call()
        assert isinstance(info.value, MedQError)
        assert "object key" in str(info.value)
    assert list(store.list()) == before
    assert not (tmp_path / "d").exists()


def test_non_string_keys_rejected():
    for key in (None, b"bytes", 3, ["a"]):
        with pytest.raises(InvalidKeyError, match="must be a string"):
            validate_key(key)


_SAFE = st.text(alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_.~ "),
                min_size=1, max_size=20).filter(lambda s: s not in (".", "..")
                                                and not s.startswith(".medq-tmp-"))
_HOSTILE_PART = st.sampled_from(["..", ".", "", "\\", "\x00", "\n", "\x1b", "\u2028", "\u202e"])


@given(parts=st.lists(_SAFE, min_size=0, max_size=3), bad=_HOSTILE_PART,
       pos=st.integers(min_value=0, max_value=3), glue=st.sampled_from(["/", ""]),
       lead=st.booleans())
@hsettings(max_examples=200, deadline=None)
def test_hypothesis_hostile_keys(parts, bad, pos, glue, lead):
    """A key with any hostile segment or character anywhere is rejected, naming the key."""
    parts = list(parts)
    pos = min(pos, len(parts))
    if glue == "/" or bad in (".", "..", ""):
        parts.insert(pos, bad)  # a whole hostile segment
        key = "/".join(parts)
    else:
        key = "/".join(parts[:pos] + [(parts[pos] if pos < len(parts) else "x") + bad]
                       + parts[pos + 1:])
    if lead:
        key = "/" + key
    with pytest.raises(InvalidKeyError) as info:
        validate_key(key)
    assert repr(key)[:50] in str(info.value) or len(key) > 200


@given(parts=st.lists(_SAFE, min_size=1, max_size=4))
@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hypothesis_valid_keys_round_trip(store, parts):
    key = "/".join(parts)
    assert validate_key(key) == key
    store.put_bytes(key, key.encode())
    assert store.get_bytes(key) == key.encode()
    assert key in set(store.list(parts[0]))
    store.delete(key)
    assert not store.exists(key)


# -- local-only: symlinks ---------------------------------------------------------------------

def test_local_symlink_escape_is_refused(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    (store.root / "filelink").symlink_to(outside / "secret.txt")
    for key in ("link/secret.txt", "link/new.txt", "filelink"):
        for call in (lambda k=key: store.get_bytes(k), lambda k=key: store.put_bytes(k, b"x"),
                     lambda k=key: store.delete(k), lambda k=key: store.url(k)):
            with pytest.raises(InvalidKeyError, match="outside the store root"):
                call()
    with pytest.raises(InvalidKeyError, match="outside"):
        list(store.list("link/"))
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "secret"
    assert list(store.list()) == []  # links are not objects


def test_local_key_folder_conflict_is_clear(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    store.put_bytes("a", b"1")
    with pytest.raises(ObjectStoreError, match="parent of it is already an object"):
        store.put_bytes("a/b", b"2")
    store.put_bytes("x/y", b"1")
    with pytest.raises(ObjectStoreError, match="folder of other objects"):
        store.put_bytes("x", b"2")
    assert store.get_bytes("a") == b"1" and list(store.list()) == ["a", "x/y"]


# -- factory, unreachable endpoint, secrets -----------------------------------------------------

def test_factory_picks_backend(tmp_path):
    local = create_object_store(load_settings(workspace=tmp_path / "ws"))
    assert isinstance(local, LocalObjectStore) and local.root == (tmp_path / "ws" / "objects")
    with pytest.raises(ObjectStoreError, match=r"unknown object store backend 'gcs'.*local, s3"):
        create_object_store(load_settings(workspace=tmp_path / "ws", objects={"backend": "gcs"}))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends


def test_unreachable_endpoint_is_one_clear_error(tmp_path, caplog):
    port = _closed_port()
    settings = load_settings(workspace=tmp_path / "ws", objects={
        "backend": "s3", "s3_endpoint": f"127.0.0.1:{port}", "s3_access_key": "AKIAVERYSECRET",
        "s3_secret_key": "wJalrXUtnFEMI-very-secret"})
    caplog.set_level(logging.DEBUG)
    start = time.monotonic()
    with pytest.raises(ObjectStoreError) as info:
        create_object_store(settings)
    assert time.monotonic() - start < 15
    msg = str(info.value)
    assert f"127.0.0.1:{port}" in msg and "unreachable" in msg
    for secret in ("AKIAVERYSECRET", "wJalrXUtnFEMI-very-secret"):
        assert secret not in msg and secret not in caplog.text and secret not in repr(info.value)
    # The same through the workspace's lazy store, and without touching the catalog.
    from medq.storage.workspace import Workspace
    with pytest.raises(ObjectStoreError, match="unreachable"):
        _ = Workspace(settings).objects


def test_bad_endpoint_strings(tmp_path):
    for endpoint in ("http://host:9000/path", "user@host:9000", ""):
        with pytest.raises(ObjectStoreError, match="invalid S3 endpoint"):
            S3ObjectStore(endpoint, "medq-bucket", create_bucket=False)
    store = S3ObjectStore("https://minio.example.org:9443", "medq-bucket", create_bucket=False)
    assert store.secure and store.url_base == "https://minio.example.org:9443"
    assert "secret" not in repr(S3ObjectStore("127.0.0.1:1", "medq-bucket", access_key="k",
                                              secret_key="secret", create_bucket=False))


@pytest.mark.services
def test_s3_settings_and_bucket_creation(s3_server, tmp_path):
    bucket = "medq-created-by-factory"
    settings = load_settings(workspace=tmp_path / "ws",
                             objects=s3_server.settings_overrides(bucket))
    status_only = create_object_store(settings, create=False)
    with pytest.raises(ObjectStoreError, match="does not exist"):
        status_only.check()
    store = create_object_store(settings)
    assert isinstance(store, S3ObjectStore) and store.bucket == bucket
    store.check()
    store.put_bytes("k", b"v")
    assert create_object_store(settings).get_bytes("k") == b"v"  # existing bucket is reused


@pytest.mark.services
def test_s3_presigned_url_expiry_and_no_secret(s3_server, s3_store):
    # moto does not verify signatures, so only the URL itself is checked here.
    s3_store.put_bytes("p/x", b"data")
    url = s3_store.url("p/x", expiry_s=60)
    assert "X-Amz-Expires=60" in url and "X-Amz-Signature=" in url
    assert s3_server.secret_key not in url
    assert requests.get(url, timeout=10).content == b"data"
