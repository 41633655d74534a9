"""API keys kept (hashed) in the store, shared by every host on it.

    python -m scripts.keys create --name acme --events 'acme-*' [--events 'gala-*'] [--role organizer]
    python -m scripts.keys list
    python -m scripts.keys revoke acme

``create`` prints the new key once, on standard output, and never again: only its SHA-256
is stored. Roles: ``organizer`` (ingest, delete, set access, stats and forget records of
its events; the default), ``reader`` (stats of its events), ``admin`` (everything). Keys in
FACEMATCH_API_KEYS are admin keys too and are not listed here. The store is the one of
FACEMATCH_DATA_DIR (``--data-dir`` overrides).
"""

from __future__ import annotations

import datetime as dt
import sys

import click

from flask_backend.access import keys
from flask_backend.config import Settings
from flask_backend.services import Services
from flask_backend.store import access_db


def _services(data_dir: str | None) -> Services:
    overrides = {"data_dir": data_dir} if data_dir else {}
    return Services(Settings.from_env(**overrides))


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", envvar="FACEMATCH_DATA_DIR", help="Store directory (default: FACEMATCH_DATA_DIR).")
@click.pass_context
def main(ctx: click.Context, data_dir: str | None) -> None:
    """Create, list and revoke FaceMatch API keys."""
    ctx.obj = _services(data_dir)


@main.command()
@click.option("--name", required=True, help="Who the key is for (unique among active keys).")
@click.option("--events", "patterns", multiple=True, help="Event-id pattern, e.g. 'acme-*' (repeatable).")
@click.option("--role", type=click.Choice(keys.ROLES), default="organizer", show_default=True)
@click.pass_obj
def create(svc: Services, name: str, patterns: tuple[str, ...], role: str) -> None:
    """Create a key and print it (once)."""
    try:
        key = keys.create_key(svc, name, role, list(patterns))
    except (ValueError, access_db.AccessDbError) as exc:
        raise click.UsageError(str(exc)) from None
    scope = ", ".join(patterns) if patterns else "every event"
    click.echo(f"created {role} key {name!r} for {scope}; it is shown only now:", err=True)
    click.echo(key)


@main.command("list")
@click.pass_obj
def list_(svc: Services) -> None:
    """Every stored key: name, role, events, created, revoked (never the key)."""
    with svc.store.db.read() as c:
        rows = access_db.list_keys(c)
    if not rows:
        click.echo("no stored keys", err=True)
    for row in rows:
        state = f"revoked {_when(row.revoked_at)}" if row.revoked_at else "active"
        click.echo(f"{row.name}\t{row.role}\t{','.join(row.patterns)}\tcreated {_when(row.created_at)}\t{state}")


@main.command()
@click.argument("name")
@click.pass_obj
def revoke(svc: Services, name: str) -> None:
    """Revoke the key NAME: it answers 401 from the next request on, on every host."""
    with svc.store.db.write() as c:
        done = access_db.revoke_key(c, name)
    if not done:
        click.echo(f"no active key named {name!r}", err=True)
        sys.exit(1)
    click.echo(f"revoked {name!r}", err=True)


if __name__ == "__main__":
    main()
