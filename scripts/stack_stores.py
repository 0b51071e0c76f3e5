"""The stores a stack uses outside its state folder: Postgres databases, Redis keys, S3 buckets.

Each is named by the stack's instance (``Stack.instance``), so stacks with different state folders
never share one; ``scripts/stack.py`` creates them on ``init``/``up`` and drops them on ``destroy``.
"""

from __future__ import annotations

import contextlib
import os

from scripts import s3_service
from scripts.stack_shape import Stack


def create_buckets(stack: Stack) -> list[str]:
    """Create the buckets the stack's storage root and MLflow artifacts name (idempotent; the
    stack's own S3 server keeps objects in memory, so a restarted one starts empty)."""
    from jobs.core.config import load_config

    env = stack.full_env()
    uris = [load_config(environ=env).storage.root_path(), stack.mlflow_artifacts]
    buckets = sorted({u.split("://", 1)[1].split("/", 1)[0] for u in uris if u.startswith("s3://")})
    with patched_environ(stack.object_store_env()):
        for bucket in buckets:
            s3_service.create_bucket(bucket)
    return buckets


@contextlib.contextmanager
def patched_environ(values: dict[str, str]):
    """``os.environ`` with ``values`` set while the block runs, restored afterwards (how this
    process reaches a stack's own S3 server)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pg_admin(stack: Stack):
    """An autocommit connection to the server's ``postgres`` maintenance database."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(stack.pg_url("postgres"))
    conn = psycopg2.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, dbname="postgres"
    )
    conn.autocommit = True
    return conn


def create_databases(stack: Stack) -> None:
    """Create this stack's Airflow and MLflow databases when missing (idempotent)."""
    from psycopg2 import sql

    try:
        conn = _pg_admin(stack)
    except Exception as exc:  # psycopg2.OperationalError: the message names host and port
        raise SystemExit(f"cannot reach PostgreSQL for stack.db postgres ({stack.pg_url('postgres')}): {exc}") from exc
    with contextlib.closing(conn), conn.cursor() as cur:
        for name in stack.pg_databases.values():
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def delete_redis_keys(stack: Stack) -> int:
    """Delete every key of this stack in its Redis DB (those under ``redis_key_prefix``)."""
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    try:
        keys = list(client.scan_iter(match=stack.redis_key_prefix + "*", count=500))
        return client.delete(*keys) if keys else 0
    finally:
        client.close()
