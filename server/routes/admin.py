"""Admin API (``Authorization: Bearer $HEARTH_ADMIN_KEY``, checked by ``server.auth``): tenants,
their API keys and their limits (``/v1/admin/limits/{tenant or key id}``). A key is returned
once, at creation; only its hash is stored."""

from __future__ import annotations

import asyncio
import json
import shutil
import tarfile
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.background_tasks import BackgroundTask
from litestar.response import File
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from engine import LIMIT_NAMES, InvalidRequestError, check_overrides
from server.routes.common import read_body
from server.state import services

if TYPE_CHECKING:
    from engine import ApiKey, Tenant


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    # None: every scope (engine.storage.SCOPES); expires_at: Unix seconds, None: never.
    scopes: list[str] | None = None
    expires_at: int | None = None


def tenant_out(t: Tenant) -> dict[str, Any]:
    return {
        "id": t.id,
        "object": "tenant",
        "name": t.name,
        "created_at": int(t.created_at.timestamp()),
    }


def key_out(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "object": "api_key",
        "tenant_id": k.tenant_id,
        "name": k.name,
        "prefix": f"hth_{k.prefix}_",
        "created_at": int(k.created_at.timestamp()),
        "revoked": k.revoked_at is not None,
        "scopes": list(k.scopes),
        "expires_at": None if k.expires_at is None else _unix(k.expires_at),
    }


def _unix(naive_utc: datetime) -> int:
    return int(naive_utc.replace(tzinfo=UTC).timestamp())


def _expiry(expires_at: int | None) -> datetime | None:
    """Unix seconds → naive UTC; 400 unless within the next ten years."""
    if expires_at is None:
        return None
    if isinstance(expires_at, bool) or not 0 < expires_at < 2**34:
        raise InvalidRequestError(
            "expires_at must be Unix seconds in the future", param="expires_at"
        )
    when = datetime.fromtimestamp(expires_at, UTC).replace(tzinfo=None)
    if when > datetime.now(UTC).replace(tzinfo=None) + timedelta(days=3650):
        raise InvalidRequestError("expires_at must be within ten years", param="expires_at")
    return when


@post("/v1/admin/tenants", status_code=HTTP_201_CREATED)
async def create_tenant(request: Request) -> dict[str, Any]:
    body = await read_body(request, TenantCreate)
    return tenant_out(await services(request).tenancy.create_tenant(body.name))


@get("/v1/admin/tenants")
async def list_tenants(request: Request) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [tenant_out(t) for t in await services(request).tenancy.list_tenants()],
    }


@post("/v1/admin/tenants/{tenant:str}/keys", status_code=HTTP_201_CREATED)
async def create_key(request: Request, tenant: str) -> dict[str, Any]:
    body = await read_body(request, KeyCreate, empty=KeyCreate())
    if body.name is not None and len(body.name) > 200:
        raise InvalidRequestError("name: at most 200 characters", param="name")
    key, record = await services(request).tenancy.create_key(
        tenant, body.name, body.scopes, _expiry(body.expires_at)
    )
    return key_out(record) | {"key": key}


@get("/v1/admin/tenants/{tenant:str}/keys")
async def list_keys(request: Request, tenant: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [key_out(k) for k in await services(request).tenancy.list_keys(tenant)],
    }


class LimitsUpdate(msgspec.Struct, forbid_unknown_fields=True):
    limits: dict[str, Any]


async def _limits_out(request: Request, subject: str) -> dict[str, Any]:
    """A tenant's (id or name) or an API key's (``key_...``) overrides and effective limits."""
    hearth = services(request)
    if subject.startswith("key_"):
        key = await hearth.tenancy.get_key(subject)
        subject_id, kind = key.id, "api_key"
        effective = hearth.limits.quota(key.tenant_id, key.id)
    else:
        tenant = await hearth.tenancy.get_tenant(subject)
        subject_id, kind = tenant.id, "tenant"
        effective = hearth.limits.quota(tenant.id)
    return {
        "object": "limits",
        "subject": subject_id,
        "subject_type": kind,
        "overrides": hearth.limits.overrides(subject_id),
        "effective": {name: getattr(effective, name) for name in LIMIT_NAMES},
    }


@get("/v1/admin/limits/{subject:str}")
async def get_limits(request: Request, subject: str) -> dict[str, Any]:
    return await _limits_out(request, subject)


@put("/v1/admin/limits/{subject:str}", status_code=HTTP_200_OK)
async def set_limits(request: Request, subject: str) -> dict[str, Any]:
    """Body ``{"limits": {"requests_per_min": 60, "tokens_per_day": null, ...}}``: sets (or with
    null removes) overrides of a tenant or API key; 0 means unlimited."""
    body = await read_body(request, LimitsUpdate)
    changes = check_overrides(body.limits)
    current = await _limits_out(request, subject)  # 404 for an unknown tenant or key
    await services(request).limits.set_overrides(current["subject"], changes)
    return await _limits_out(request, subject)


@delete("/v1/admin/tenants/{tenant:str}", status_code=HTTP_200_OK)
async def delete_tenant(request: Request, tenant: str) -> dict[str, Any]:
    """``?purge=true``: delete the tenant and everything it holds (rows in every table, index
    files, its tables file, cached answers and classifiers); 409 while one of its jobs runs.
    The answer lists what was deleted and ``remaining`` (empty)."""
    if request.query_params.get("purge") != "true":
        raise InvalidRequestError(
            "deleting a tenant purges all its data for good: confirm with ?purge=true "
            "(export it first with GET /v1/admin/tenants/{id}/export)",
            param="purge",
        )
    return await services(request).tenant_data.purge(tenant)


@get("/v1/admin/tenants/{tenant:str}/export")
async def export_tenant(request: Request, tenant: str) -> File:
    """Everything of the tenant as a ``.tar.gz``: ``manifest.json``, ``db/<table>.jsonl``,
    ``indexes/<collection>/``, ``tables.duckdb`` (see ``engine.tenant_data``)."""
    hearth = services(request)
    scratch = Path(tempfile.mkdtemp(prefix="export-", dir=hearth.settings.data_dir))
    try:
        manifest = await hearth.tenant_data.export(tenant, scratch / "tenant")
        archive = scratch / f"{manifest['tenant']}.tar.gz"
        await asyncio.to_thread(_tar, scratch / "tenant", archive)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return File(
        path=archive,
        filename=archive.name,
        media_type="application/gzip",
        background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
    )


def _tar(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=".")


MAX_AUDIT = 500


def _audit_query(request: Request) -> dict[str, Any]:
    query = request.query_params
    for name in ("tenant", "action"):
        if len(query.get(name) or "") > 200:
            raise InvalidRequestError(f"{name}: at most 200 characters", param=name)
    return {"tenant": query.get("tenant") or None, "action": query.get("action") or None}


@get("/v1/admin/audit")
async def list_audit(request: Request) -> dict[str, Any]:
    """Every tenant's audit rows (``?tenant=`` one tenant's, ``_server`` the server's own;
    ``?action=`` a prefix such as ``admin.``), newest first, at most ``limit`` (1-500)."""
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT:
        raise InvalidRequestError(f"limit must be an integer 1-{MAX_AUDIT}", param="limit")
    rows = await services(request).audit.list(**_audit_query(request), limit=int(raw))
    return {"object": "list", "data": rows}


@get("/v1/admin/audit/export")
async def export_audit(request: Request) -> Response:
    """All audit rows (``?tenant=``, ``?action=`` narrow them) as JSON lines, newest first."""
    rows = await services(request).audit.list(**_audit_query(request), limit=None)
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return Response(lines, media_type="application/x-ndjson")


@post("/v1/admin/keys/{key_id:str}/revoke", status_code=HTTP_200_OK)
async def revoke_key(request: Request, key_id: str) -> dict[str, Any]:
    return key_out(await services(request).tenancy.revoke_key(key_id))


HANDLERS = [
    create_tenant,
    list_tenants,
    create_key,
    list_keys,
    revoke_key,
    get_limits,
    set_limits,
    delete_tenant,
    export_tenant,
    list_audit,
    export_audit,
]
