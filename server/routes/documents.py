"""Collections, documents (their ingestion runs as a job: see ``server.routes.jobs``), sessions
and ``/v1/retrieve``.

Handlers are thin: parse the wire struct, call one service method (documents, jobs, retrieval,
sessions) with the tenant the auth middleware resolved, convert the result. Any id of another
tenant answers 404.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import UploadFile
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from engine import DocumentInput, InvalidRequestError
from server.auth import tenant_of
from server.routes.common import read_body
from server.routes.jobs import job_out
from server.state import services
from server.wire import (
    ChunkInfo,
    CollectionInfo,
    Deleted,
    DocumentInfo,
    JobInfo,
    ListOf,
    QueryHits,
    RetrievalHit,
    RetrievalList,
    SessionMessage,
)

#: Longest model id a request may name.
MAX_MODEL_ID = 128

if TYPE_CHECKING:
    from engine import Collection, Document, RetrievedChunk


# ---- wire structs ---------------------------------------------------------------------------


class CollectionCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None
    metadata: dict[str, Any] | None = None
    # The embedding model of its passages and queries (default: the server's).
    embedding_model: str | None = None


class ReembedBody(msgspec.Struct, forbid_unknown_fields=True):
    model: str


class DocumentIn(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class DocumentsBody(msgspec.Struct, forbid_unknown_fields=True):
    documents: list[DocumentIn]


class RetrieveBody(msgspec.Struct, forbid_unknown_fields=True):
    query: str | list[str]
    collection: str | None = None
    collections: list[str] | None = None
    top_k: int | None = None
    mode: str = "hybrid"
    filter: dict[str, Any] | None = None


# ---- conversions ----------------------------------------------------------------------------


def collection_out(col: Collection, stats: dict[str, Any] | None = None) -> CollectionInfo:
    counts = {} if stats is None else {k: stats[k] for k in ("documents", "chunks", "index")}
    return CollectionInfo(
        id=col.name,
        name=col.name,
        created_at=int(col.created_at.timestamp()),
        chunk_tokens=col.chunk_tokens,
        chunk_overlap=col.chunk_overlap,
        metadata=col.metadata,
        embedding_model=col.embedding_model,
        **counts,
    )


def document_out(doc: Document, collection: str) -> DocumentInfo:
    return DocumentInfo(
        id=doc.public_id,
        collection=collection,
        internal_id=doc.id,
        title=doc.title,
        status=doc.status,
        error=doc.error,
        metadata=doc.metadata,
        content_hash=doc.content_hash,
        bytes=doc.n_bytes,
        pages=doc.n_pages,
        chunks=doc.n_chunks,
        job_id=doc.job_id,
        created_at=int(doc.created_at.timestamp()),
    )


def hit_out(hit: RetrievedChunk) -> RetrievalHit:
    return msgspec.convert(hit, RetrievalHit, from_attributes=True)


# ---- collections ----------------------------------------------------------------------------


@post("/v1/collections", status_code=HTTP_201_CREATED)
async def create_collection(request: Request) -> CollectionInfo:
    body = await read_body(request, CollectionCreate)
    svc = services(request).documents
    if body.embedding_model is not None and len(body.embedding_model) > MAX_MODEL_ID:
        raise InvalidRequestError(
            f"embedding_model: at most {MAX_MODEL_ID} characters", param="embedding_model"
        )
    col = await svc.create_collection(
        tenant_of(request),
        body.name,
        body.chunk_tokens,
        body.chunk_overlap,
        body.metadata,
        body.embedding_model,
    )
    return collection_out(col, await svc.collection_stats(col))


@get("/v1/collections")
async def list_collections(request: Request) -> ListOf[CollectionInfo]:
    svc = services(request).documents
    cols = await svc.list_collections(tenant_of(request))
    return ListOf(data=[collection_out(c, await svc.collection_stats(c)) for c in cols])


@get("/v1/collections/{name:str}")
async def get_collection(request: Request, name: str) -> CollectionInfo:
    svc = services(request).documents
    col = await svc.get_collection(tenant_of(request), name)
    return collection_out(col, await svc.collection_stats(col))


@delete("/v1/collections/{name:str}", status_code=HTTP_200_OK)
async def delete_collection(request: Request, name: str) -> Deleted:
    await services(request).documents.delete_collection(tenant_of(request), name)
    return Deleted(id=name, object="collection")


@post("/v1/collections/{name:str}/reembed", status_code=HTTP_202_ACCEPTED)
async def reembed_collection(request: Request, name: str) -> JobInfo:
    """Start a durable job that re-embeds the collection with ``model`` and then switches it
    over; follow it at ``/v1/jobs/{id}`` (searches use the old vectors until it is done)."""
    body = await read_body(request, ReembedBody)
    if len(body.model) > MAX_MODEL_ID:
        raise InvalidRequestError(f"model: at most {MAX_MODEL_ID} characters", param="model")
    job = await services(request).documents.reembed(tenant_of(request), name, body.model)
    return job_out(job)


# ---- documents ------------------------------------------------------------------------------


@post("/v1/collections/{name:str}/documents", status_code=HTTP_202_ACCEPTED)
async def upload_documents(request: Request, name: str) -> JobInfo:
    """Multipart files (``file``/``files``, optional ``id``, ``title``, ``metadata`` JSON) or JSON
    ``{"documents": [{"id", "title", "text", "metadata"}]}``; answers with the job."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        items = await _multipart_items(request)
    else:
        body = await read_body(request, DocumentsBody)
        items = [
            DocumentInput(text=d.text, client_id=d.id, title=d.title, metadata=d.metadata)
            for d in body.documents
        ]
    job = await services(request).documents.submit(tenant_of(request), name, items)
    return job_out(job)


async def _multipart_items(request: Request) -> list[DocumentInput]:
    form = await request.form()
    files: list[UploadFile] = []
    fields: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append(value)
        elif key in ("id", "title", "metadata"):
            fields[key] = str(value)
    if not files:
        raise InvalidRequestError("multipart upload has no file part", param="file")
    if "id" in fields and len(files) > 1:
        raise InvalidRequestError("id applies to a single file only", param="id")
    metadata = _metadata_field(fields.get("metadata"))
    items = []
    for upload in files:
        items.append(
            DocumentInput(
                data=await upload.read(),
                filename=upload.filename,
                client_id=fields.get("id"),
                title=fields.get("title") or upload.filename,
                metadata=metadata,
            )
        )
    return items


def _metadata_field(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidRequestError("metadata must be a JSON object", param="metadata") from None
    if not isinstance(value, dict):
        raise InvalidRequestError("metadata must be a JSON object", param="metadata")
    return value


@get("/v1/collections/{name:str}/documents")
async def list_documents(
    request: Request, name: str, limit: int = 100, offset: int = 0
) -> ListOf[DocumentInfo]:
    if not 1 <= limit <= 1000 or offset < 0:
        raise InvalidRequestError("limit must be in 1..1000 and offset >= 0", param="limit")
    docs = await services(request).documents.list_documents(tenant_of(request), name, limit, offset)
    return ListOf(data=[document_out(d, name) for d in docs])


@get("/v1/collections/{name:str}/documents/{doc_id:str}")
async def get_document(request: Request, name: str, doc_id: str) -> DocumentInfo:
    doc = await services(request).documents.get_document(tenant_of(request), name, doc_id)
    return document_out(doc, name)


@get("/v1/collections/{name:str}/documents/{doc_id:str}/chunks")
async def document_chunks(request: Request, name: str, doc_id: str) -> ListOf[ChunkInfo]:
    chunks = await services(request).documents.document_chunks(tenant_of(request), name, doc_id)
    return ListOf(
        data=[
            ChunkInfo(
                chunk_id=c.id,
                ord=c.ord,
                text=c.text,
                tokens=c.n_tokens,
                char_start=c.char_start,
                char_end=c.char_end,
                page=c.page,
            )
            for c in chunks
        ]
    )


@delete("/v1/collections/{name:str}/documents/{doc_id:str}", status_code=HTTP_200_OK)
async def delete_document(request: Request, name: str, doc_id: str) -> Deleted:
    doc = await services(request).documents.delete_document(tenant_of(request), name, doc_id)
    return Deleted(id=doc.public_id, object="document")


# ---- retrieval ------------------------------------------------------------------------------


@post("/v1/retrieve", status_code=HTTP_200_OK)
async def retrieve(request: Request) -> RetrievalList:
    body = await read_body(request, RetrieveBody)
    names = list(body.collections or []) + ([body.collection] if body.collection else [])
    if not names:
        raise InvalidRequestError("give collection or collections", param="collection")
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    results = await services(request).retrieval.retrieve(
        tenant_of(request), names, queries, body.top_k, body.mode, body.filter
    )
    data = [
        QueryHits(query=q, data=[hit_out(h) for h in hits])
        for q, hits in zip(queries, results, strict=True)
    ]
    if isinstance(body.query, str):
        return RetrievalList(mode=body.mode, data=data[0].data)
    return RetrievalList(mode=body.mode, results=data)


# ---- sessions -------------------------------------------------------------------------------


@get("/v1/sessions/{session_id:str}/messages")
async def session_messages(request: Request, session_id: str) -> ListOf[SessionMessage]:
    msgs = await services(request).sessions.messages(tenant_of(request), session_id)
    return ListOf(
        data=[
            SessionMessage(
                role=m.role,
                content=m.content,
                sources=m.sources,
                confidence=m.confidence,
                created_at=int(m.created_at.timestamp()),
            )
            for m in msgs
        ]
    )


HANDLERS = [
    create_collection,
    list_collections,
    get_collection,
    delete_collection,
    reembed_collection,
    upload_documents,
    list_documents,
    get_document,
    document_chunks,
    delete_document,
    retrieve,
    session_messages,
]
