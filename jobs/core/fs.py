"""One way to reach a file, local or on an object store: the filesystem abstraction of every zone.

A plain path or ``file://`` URI is a local file; ``s3://bucket/key`` (and any other scheme
pyarrow knows) goes through ``pyarrow.fs``, which reads the endpoint (``AWS_ENDPOINT_URL``) and
the credentials from the environment — never from the pipeline's config, pod specs or logs.
Errors of the store become ``PublishError`` (retryable) naming the URI and the endpoint.
Writes are whole-file atomic: a local temporary sibling and a rename, or one PUT.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Any

from jobs.core.errors import Retryable


class PublishError(Retryable):
    """The output location cannot be written (the message names it).

    Retryable: an operator can lift the fault (free space, fix permissions) and the partition
    is untouched, so the task's retry succeeds without redoing anything by hand.
    """


def is_local(uri: str | Path) -> bool:
    """A plain path or ``file://`` URI (everything else goes through ``pyarrow.fs``)."""
    text = str(uri)
    return "://" not in text or text.startswith("file://")


def local_path(uri: str | Path) -> Path:
    """Path of a local URI (plain path or file://); object-store URIs are rejected."""
    uri = str(uri)
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        raise PublishError(f"{uri}: a local path is needed here, not an object-store URI")
    return Path(uri)


def endpoint() -> str:
    """The object-store endpoint this process uses (for messages): ``AWS_ENDPOINT_URL`` or AWS."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the AWS default endpoint"


def filesystem(uri: str | Path):
    """``(pyarrow FileSystem, path inside it)`` of a local path or an object-store URI."""
    import pyarrow.fs as pafs

    if is_local(uri):
        return pafs.LocalFileSystem(), str(local_path(uri))
    try:
        if str(uri).startswith(("s3://", "s3a://")):
            bucket, key = _bucket_key(str(uri))
            # A few quick retries, then a clear error (the caller's task is retried by Airflow):
            # the SDK default retries for many seconds before saying the endpoint is down.
            options: dict[str, Any] = {}
            url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if url:
                scheme, _, host = url.partition("://")
                options = {"endpoint_override": host.rstrip("/"), "scheme": scheme}
            s3 = pafs.S3FileSystem(
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3),
                connect_timeout=5,
                request_timeout=120,
                **options,
            )
            return s3, f"{bucket}/{key}".rstrip("/")
        return pafs.FileSystem.from_uri(str(uri))
    except (OSError, ValueError) as exc:
        raise PublishError(f"{uri}: cannot open the object store at {endpoint()}: {exc}") from exc


def remote_error(what: str, uri: str, exc: BaseException) -> PublishError:
    """A retryable error naming the operation, the URI and the endpoint (first line of ``exc``)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PublishError(f"cannot {what} {uri} (object store {endpoint()}): {first[:300]}")


class _RawArrowFile(io.RawIOBase):
    """A pyarrow random-access file as a raw Python stream (for ``io.BufferedReader``)."""

    def __init__(self, native: Any) -> None:
        self._native = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._native.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._native.seek(pos, whence)

    def tell(self) -> int:
        return self._native.tell()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._native.close()
        super().close()


def open_input(uri: str | Path) -> IO[bytes]:
    """A seekable, line-readable binary stream of a file (local or object store)."""
    if is_local(uri):
        return open(local_path(uri), "rb")
    fs, path = filesystem(uri)
    try:
        native = fs.open_input_file(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise remote_error("read", str(uri), exc) from exc
    return io.BufferedReader(_RawArrowFile(native), buffer_size=1 << 20)


def file_size(uri: str | Path) -> int:
    """Bytes of a file (``FileNotFoundError`` when there is none)."""
    if is_local(uri):
        return local_path(uri).stat().st_size
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    try:
        info = fs.get_file_info(path)
    except FileNotFoundError:
        raise
    except OSError as exc:  # the store did not answer: say which endpoint
        raise remote_error("read", str(uri), exc) from exc
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(str(uri))
    return int(info.size)


def list_files(folder_uri: str | Path) -> list[str]:
    """Names of the files directly in a folder (or under a prefix), sorted; [] when there is none."""
    if is_local(folder_uri):
        folder = local_path(folder_uri)
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    import pyarrow.fs as pafs

    fs, path = filesystem(folder_uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise remote_error("list", str(folder_uri), exc) from exc
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)


def is_dir(uri: str | Path) -> bool:
    """A folder (locally) or a non-empty prefix (object store)."""
    if is_local(uri):
        return local_path(uri).is_dir()
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path).type == pafs.FileType.Directory
    except OSError as exc:
        raise remote_error("list", str(uri), exc) from exc


def join(base: str | Path, *names: str) -> str:
    """``base/name/...`` as a string (local paths and URIs alike)."""
    return "/".join([str(base).rstrip("/"), *names])


def check_folder_writable(parent: Path) -> None:
    """Create a local output folder if needed; ``PublishError`` saying why it cannot take files."""
    for folder in (parent, *parent.parents):
        if folder.exists() and not folder.is_dir():
            raise PublishError(f"cannot create output folder {parent}: {folder} is a file, not a folder")
        if folder.exists():
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(f"cannot create output folder {parent}: {exc.strerror}") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PublishError(f"output folder {parent} is not writable")


def exists(uri: str) -> bool:
    """True when the file exists (local or object store)."""
    try:
        file_size(uri)
    except FileNotFoundError:
        return False
    return True


def remove_tree(uri: str | Path) -> None:
    """Delete a folder or prefix and everything in it (nothing when absent)."""
    if is_local(uri):
        shutil.rmtree(local_path(uri), ignore_errors=True)
        return
    delete_objects(str(uri).rstrip("/") + "/")


def _bucket_key(uri: str) -> tuple[str, str]:
    scheme, _, rest = uri.partition("://")
    if scheme not in ("s3", "s3a"):
        raise PublishError(f"{uri}: only s3:// object stores are supported")
    bucket, _, key = rest.partition("/")
    return bucket, key


def delete_objects(prefix_or_key: str) -> int:
    """Delete one object, or every object under a prefix ending in ``/``; returns how many.

    Through boto3, not pyarrow: pyarrow's S3 deletes leave an empty "directory" marker object
    behind (``a/b/``), which would be an object no manifest accounts for.
    """
    import boto3

    bucket, key = _bucket_key(prefix_or_key)
    client = boto3.client("s3")
    try:
        if not key.endswith("/"):
            client.delete_object(Bucket=bucket, Key=key)
            return 1
        deleted = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
                deleted += len(objects)
        return deleted
    except Exception as exc:  # botocore's errors: endpoint down, access denied
        raise remote_error("delete", prefix_or_key, exc) from exc


def read_bytes(uri: str | Path) -> bytes | None:
    """The content of a file, or None when it does not exist."""
    if is_local(uri):
        try:
            return local_path(uri).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise remote_error("read", str(uri), exc) from exc


def read_text(uri: str) -> str | None:
    """The UTF-8 text of a file, or None when it does not exist."""
    payload = read_bytes(uri)
    return None if payload is None else payload.decode()


def write_bytes_atomic(path: str | Path, payload: bytes) -> None:
    """Write a file via a temporary sibling, fsync and a rename (readers see the old or the new
    file); on an object store one PUT.

    Raises:
        PublishError: naming ``path`` when it cannot be written (read-only or missing folder,
            full disk); the previous file is left as it was and no temporary file remains.
    """
    if not is_local(path):
        fs, key = filesystem(path)
        try:
            with fs.open_output_stream(key) as fh:  # one PUT: readers see the old or the new object
                fh.write(payload)
        except OSError as exc:
            raise remote_error("write", str(path), exc) from exc
        return
    path = local_path(str(path))
    try:
        check_folder_writable(path.parent)
    except PublishError as exc:
        raise PublishError(f"cannot write {path}: {exc}") from exc
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:  # fsync before the rename: a crash never leaves a torn file
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PublishError(f"cannot write {path}: {exc.strerror}") from exc


def write_text_atomic(path: str | Path, text: str) -> None:
    """``write_bytes_atomic`` of UTF-8 text."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """``write_bytes_atomic`` of indented, key-sorted JSON."""
    write_bytes_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())
