"""Users and their sessions: ``/v1/auth/login`` and ``/v1/auth/refresh`` (open: the body carries
the password or the refresh token) and the tenant's own user management under ``/v1/users``
(a user with the ``admin`` role or a key with the ``admin`` scope; ``server.auth`` checks it).
The server administrator manages every tenant's users under ``/v1/admin/tenants/{id}/users``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, get, post, put
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from server.auth import tenant_of
from server.routes.common import read_body
from server.state import services

if TYPE_CHECKING:
    from engine import User


class Login(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str


class Refresh(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: str


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str
    role: str = "member"


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: str


def user_out(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "object": "user",
        "tenant_id": u.tenant_id,
        "email": u.email,
        "role": u.role,
        "created_at": int(u.created_at.timestamp()),
        "disabled": u.disabled_at is not None,
    }


@post("/v1/auth/login", status_code=HTTP_200_OK)
async def login(request: Request) -> dict[str, Any]:
    body = await read_body(request, Login)
    return await services(request).tenancy.login(body.email[:320], body.password[:1024])


@post("/v1/auth/refresh", status_code=HTTP_200_OK)
async def refresh(request: Request) -> dict[str, Any]:
    body = await read_body(request, Refresh)
    return await services(request).tenancy.refresh(body.refresh_token[:256])


@get("/v1/users")
async def list_users(request: Request) -> dict[str, Any]:
    users = await services(request).tenancy.list_users(tenant_of(request))
    return {"object": "list", "data": [user_out(u) for u in users]}


@post("/v1/users", status_code=HTTP_201_CREATED)
async def create_user(request: Request) -> dict[str, Any]:
    body = await read_body(request, UserCreate)
    user = await services(request).tenancy.create_user(
        tenant_of(request), body.email, body.password, body.role
    )
    return user_out(user)


@put("/v1/users/{user_id:str}", status_code=HTTP_200_OK)
async def update_user(request: Request, user_id: str) -> dict[str, Any]:
    body = await read_body(request, UserUpdate)
    tenancy = services(request).tenancy
    return user_out(await tenancy.set_role(user_id, body.role, tenant_of(request)))


@post("/v1/users/{user_id:str}/disable", status_code=HTTP_200_OK)
async def disable_user(request: Request, user_id: str) -> dict[str, Any]:
    tenancy = services(request).tenancy
    return user_out(await tenancy.disable_user(user_id, tenant_of(request)))


@post("/v1/admin/tenants/{tenant:str}/users", status_code=HTTP_201_CREATED)
async def admin_create_user(request: Request, tenant: str) -> dict[str, Any]:
    body = await read_body(request, UserCreate)
    tenancy = services(request).tenancy
    return user_out(await tenancy.create_user(tenant, body.email, body.password, body.role))


@get("/v1/admin/tenants/{tenant:str}/users")
async def admin_list_users(request: Request, tenant: str) -> dict[str, Any]:
    users = await services(request).tenancy.list_users(tenant)
    return {"object": "list", "data": [user_out(u) for u in users]}


HANDLERS = [
    login,
    refresh,
    list_users,
    create_user,
    update_user,
    disable_user,
    admin_create_user,
    admin_list_users,
]
