"""``hearth ingest`` and ``hearth admin``: documents and tenants from the command line.

Both talk to a running server over HTTP (it is the database's one writer). ``hearth admin
--offline`` instead opens the DuckDB file directly, for bootstrapping while the server is stopped
(with the server running it fails with a clear error).

    hearth ingest ./handbook --collection hr          # files: .txt .md .markdown .pdf
    hearth admin tenants create acme                  # $HEARTH_ADMIN_KEY authenticates
    hearth admin keys create acme --name ci           # prints the key once
    hearth admin tenants export acme --out ./acme-export
    hearth admin tenants delete acme --purge
    hearth admin audit export --out audit.jsonl [--tenant ten_...]
    hearth admin keys create acme --scopes inference --expires-days 90
    hearth admin users create acme ann@example.com --role viewer   # password on stdin
    hearth admin limits set acme requests_per_min=60 tokens_per_day=none   # none: the default
    hearth admin limits show key_0123abcd              # a tenant (id or name) or a key id
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from configs import Settings

log = logging.getLogger("hearth")
logging.getLogger("httpx").setLevel(logging.WARNING)

SUFFIXES = (".txt", ".md", ".markdown", ".pdf")


class CliError(RuntimeError):
    """A failure to report as one line, exit status 1."""


def _base_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.url:
        return args.url.rstrip("/")
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::") else settings.server.host
    return f"http://{host}:{settings.server.port}"


def _client(args: argparse.Namespace, settings: Settings, key: str | None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=_base_url(args, settings), headers=headers, timeout=120)


def _check(response: Any) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise CliError(f"HTTP {response.status_code}: {message}")
    return response.json()


# ---- ingest ---------------------------------------------------------------------------------


def configure_ingest(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="a file, or a folder searched recursively")
    p.add_argument("--collection", required=True)
    p.add_argument("--url", help="server URL (default: from the profile)")
    p.add_argument("--api-key", default=os.environ.get("HEARTH_API_KEY"), help="[HEARTH_API_KEY]")
    p.add_argument("--batch", type=int, default=16, help="files per upload request")
    p.add_argument("--metadata", help="JSON object stored with every document")


def files_under(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    if not path.is_dir():
        raise CliError(f"{path}: no such file or folder")
    for found in sorted(path.rglob("*")):
        if found.is_file() and found.suffix.lower() in SUFFIXES:
            yield found


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _ingest(args, settings)
    except CliError as exc:
        log.error("%s", exc)
        return 1


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    files = list(files_under(args.path))
    if not files:
        raise CliError(f"{args.path}: no .txt, .md or .pdf files")
    with _client(args, settings, args.api_key) as http:
        found = http.get(f"/v1/collections/{args.collection}")
        if found.status_code == 404:
            _check(http.post("/v1/collections", json={"name": args.collection}))
        else:
            _check(found)
        counts = {"done": 0, "failed": 0, "skipped": 0}
        with tqdm(total=len(files), unit="file", desc=args.collection) as bar:
            for lo in range(0, len(files), args.batch):
                batch = files[lo : lo + args.batch]
                job = _upload(http, args, batch)
                for state in _follow(http, job["id"]):
                    handled = state["done"] + state["failed"] + state["skipped"]
                    bar.n = lo + handled
                    bar.refresh()
                for key in counts:
                    counts[key] += state[key]
                for item in state.get("result") or []:
                    if item.get("outcome") == "failed":
                        log.warning("%s: %s", batch[item["index"]], item.get("error"))
    log.info(
        "%s: %d ingested, %d unchanged, %d failed",
        args.collection,
        counts["done"],
        counts["skipped"],
        counts["failed"],
    )
    return 1 if counts["failed"] else 0


def _upload(http: Any, args: argparse.Namespace, batch: list[Path]) -> dict[str, Any]:
    files = [("files", (p.name, p.read_bytes())) for p in batch]
    data = {"metadata": args.metadata} if args.metadata else {}
    return _check(http.post(f"/v1/collections/{args.collection}/documents", files=files, data=data))


def _follow(http: Any, job_id: str) -> Iterator[dict[str, Any]]:
    """The job's states from its SSE stream, until it finishes."""
    with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
        if response.status_code >= 400:
            response.read()
            _check(response)
        for line in response.iter_lines():
            if line.startswith("data:"):
                state = json.loads(line[5:])
                yield state
                if state["status"] in ("succeeded", "failed"):
                    return


# ---- admin ----------------------------------------------------------------------------------


def configure_admin(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="server URL (default: from the profile)")
    p.add_argument(
        "--admin-key", default=os.environ.get("HEARTH_ADMIN_KEY"), help="[HEARTH_ADMIN_KEY]"
    )
    p.add_argument(
        "--offline", action="store_true", help="edit the database directly (server stopped)"
    )
    sub = p.add_subparsers(dest="admin_command", required=True)
    tenants = sub.add_parser("tenants").add_subparsers(dest="action", required=True)
    tenants.add_parser("list")
    tenants.add_parser("create").add_argument("name")
    export = tenants.add_parser("export", help="every row, index file and table, as files")
    export.add_argument("tenant")
    export.add_argument("--out", required=True, help="a new (or empty) folder")
    purge = tenants.add_parser("delete", help="delete the tenant and all its data")
    purge.add_argument("tenant")
    purge.add_argument("--purge", action="store_true", help="required: confirms the purge")
    keys = sub.add_parser("keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create")
    create.add_argument("tenant")
    create.add_argument("--name")
    create.add_argument("--scopes", help="comma-separated: read,inference,write,admin (all)")
    create.add_argument("--expires-days", type=float, help="the key stops working after this")
    keys.add_parser("list").add_argument("tenant")
    keys.add_parser("revoke").add_argument("key_id")
    audit = sub.add_parser("audit").add_subparsers(dest="action", required=True)
    audit_export = audit.add_parser("export", help="the audit log as JSON lines")
    audit_export.add_argument("--tenant", help="one tenant's rows (id; _server: the server's)")
    audit_export.add_argument("--out", required=True, help="the .jsonl file to write")
    users = sub.add_parser("users").add_subparsers(dest="action", required=True)
    add_user = users.add_parser("create", help="the password is read from stdin")
    add_user.add_argument("tenant")
    add_user.add_argument("email")
    add_user.add_argument("--role", default="member", help="viewer, member or admin")
    users.add_parser("list").add_argument("tenant")
    limits = sub.add_parser("limits").add_subparsers(dest="action", required=True)
    limits.add_parser("show").add_argument("subject", help="tenant id or name, or key id")
    change = limits.add_parser("set")
    change.add_argument("subject", help="tenant id or name, or key id")
    change.add_argument("values", nargs="+", help="name=N (0: unlimited) or name=none")


def _key_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name} if args.name else {}
    if args.scopes:
        body["scopes"] = [x.strip() for x in args.scopes.split(",") if x.strip()]
    if args.expires_days is not None:
        if args.expires_days <= 0:
            raise CliError("--expires-days must be positive")
        body["expires_at"] = int(time.time() + args.expires_days * 86400)
    return body


def _password() -> str:
    """The new user's password: the first line of stdin."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


def limit_values(pairs: list[str]) -> dict[str, int | None]:
    """``["requests_per_min=60", "tokens_per_day=none"]`` → the admin API's ``limits`` object."""
    out: dict[str, int | None] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"{pair!r}: expected name=value")
        if value.strip().lower() in ("none", "null", "default"):
            out[name] = None
            continue
        try:
            out[name] = int(value.replace("_", ""))
        except ValueError:
            raise CliError(f"{pair!r}: the value must be a whole number or none") from None
    return out


def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    try:
        result = _admin_offline(args, settings) if args.offline else _admin_http(args, settings)
    except CliError as exc:
        log.error("%s", exc)
        return 1
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return 0


def _admin_http(args: argparse.Namespace, settings: Settings) -> Any:
    if not args.admin_key:
        raise CliError("set HEARTH_ADMIN_KEY (or --admin-key), the key the server was started with")
    with _client(args, settings, args.admin_key) as http:
        command = (args.admin_command, args.action)
        if command == ("tenants", "list"):
            return _check(http.get("/v1/admin/tenants"))["data"]
        if command == ("tenants", "create"):
            return _check(http.post("/v1/admin/tenants", json={"name": args.name}))
        if command == ("tenants", "export"):
            return _export_http(http, args.tenant, Path(args.out))
        if command == ("tenants", "delete"):
            _confirm_purge(args)
            return _check(http.delete(f"/v1/admin/tenants/{args.tenant}?purge=true"))
        if command == ("keys", "create"):
            body = _key_body(args)
            return _check(http.post(f"/v1/admin/tenants/{args.tenant}/keys", json=body))
        if command == ("users", "create"):
            body = {"email": args.email, "password": _password(), "role": args.role}
            return _check(http.post(f"/v1/admin/tenants/{args.tenant}/users", json=body))
        if command == ("users", "list"):
            return _check(http.get(f"/v1/admin/tenants/{args.tenant}/users"))["data"]
        if command == ("audit", "export"):
            params = {"tenant": args.tenant} if args.tenant else {}
            response = http.get("/v1/admin/audit/export", params=params, timeout=600)
            if response.status_code != 200:
                _check(response)
            return _write_lines(Path(args.out), response.text)
        if command == ("keys", "list"):
            return _check(http.get(f"/v1/admin/tenants/{args.tenant}/keys"))["data"]
        if command == ("limits", "show"):
            return _check(http.get(f"/v1/admin/limits/{args.subject}"))
        if command == ("limits", "set"):
            body = {"limits": limit_values(args.values)}
            return _check(http.put(f"/v1/admin/limits/{args.subject}", json=body))
        return _check(http.post(f"/v1/admin/keys/{args.key_id}/revoke"))


def _admin_offline(args: argparse.Namespace, settings: Settings) -> Any:
    from engine import HearthError, StorageError, db_path, open_store

    try:
        db = open_store(db_path(settings), threads=1)
    except StorageError as exc:
        raise CliError(str(exc)) from None
    try:
        return _offline_command(args, db, settings)
    except HearthError as exc:
        raise CliError(exc.message) from None
    finally:
        db.close()


def _export_http(http: Any, tenant: str, out: Path) -> Any:
    import tarfile

    if out.exists() and any(out.iterdir()):
        raise CliError(f"{out} is not empty")
    response = http.get(f"/v1/admin/tenants/{tenant}/export", timeout=600)
    if response.status_code != 200:
        _check(response)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        tar.extractall(out, filter="data")
    return json.loads((out / "manifest.json").read_text())


def _write_lines(out: Path, text: str) -> dict[str, Any]:
    out.write_text(text, encoding="utf-8")
    return {"file": str(out), "rows": text.count("\n")}


def _confirm_purge(args: argparse.Namespace) -> None:
    if not args.purge:
        raise CliError("deleting a tenant purges all its data for good: add --purge to confirm")


def _tenant_data_offline(args: argparse.Namespace, db: Any, settings: Settings) -> Any:
    import asyncio
    import shutil

    from engine import TableStore, TenantDataService

    index_dir = settings.data_dir / "indexes"
    service = TenantDataService(
        db,
        index_dir,
        lambda col: shutil.rmtree(index_dir / col, ignore_errors=True),
        caches=[],  # the server is stopped: nothing is cached
        tables_path=TableStore(settings.data_dir / "tables").path,
    )
    if args.action == "export":
        return asyncio.run(service.export(args.tenant, Path(args.out)))
    _confirm_purge(args)
    return asyncio.run(service.purge(args.tenant))


def _offline_command(args: argparse.Namespace, db: Any, settings: Settings) -> Any:
    command = (args.admin_command, args.action)
    if args.admin_command == "limits":
        raise CliError("limits are changed through the running server (without --offline)")
    if command == ("tenants", "list"):
        return [t.__dict__ for t in db.tenants.list()]
    if command == ("tenants", "create"):
        return db.tenants.create(args.name).__dict__
    if command in (("tenants", "export"), ("tenants", "delete")):
        return _tenant_data_offline(args, db, settings)
    if command == ("keys", "create"):
        body = _key_body(args)
        expires = body.get("expires_at")
        when = None if expires is None else datetime.fromtimestamp(expires, UTC)
        key, record = db.tenants.create_key(
            args.tenant, args.name, body.get("scopes"), when and when.replace(tzinfo=None)
        )
        return record.__dict__ | {"key": key}
    if command == ("users", "create"):
        return db.users.create(args.tenant, args.email, _password(), args.role).__dict__
    if command == ("users", "list"):
        return [u.__dict__ for u in db.users.list(args.tenant)]
    if command == ("audit", "export"):
        import asyncio

        from engine import AuditLog

        rows = asyncio.run(AuditLog(db.store).list(args.tenant, limit=None))
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
        return _write_lines(Path(args.out), text)
    if command == ("keys", "list"):
        return [k.__dict__ for k in db.tenants.list_keys(args.tenant)]
    return db.tenants.revoke_key(args.key_id).__dict__


DOCUMENT_COMMANDS = {
    "ingest": (configure_ingest, run_ingest),
    "admin": (configure_admin, run_admin),
}
