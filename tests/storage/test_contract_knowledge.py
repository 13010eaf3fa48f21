"""Knowledge collections: per-agent grants checked inside every query, documents in chunks, search.

Every test makes its own agents and collections and searches for words no other test uses (or
names its collections in ``collection_ids``): the module's store is shared, and the library
(``family``/``public`` collections) is readable by every agent in it. The 100-collection corpus
cases (k hits, recall) are in ``test_knowledge_corpus``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import numpy as np
import pytest

from agentbus import InvalidAgentIdError, uuid7
from agentbus.storage._canonical import chunk_text
from agentbus.storage._errors import (
    DimensionMismatchError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
    ValidationError,
)
from agentbus.storage._models import (
    CHUNK_CHARS,
    CHUNK_OVERLAP,
    MAX_SUMMARY_CHARS,
    RRF_K,
    KnowledgeCollection,
    KnowledgeHit,
    MemoryStats,
)
from agentbus.testing import PostgresServer

from ._stores import store
from ._support import (
    EMBEDDING_DIM,
    MALFORMED_IDS,
    as_list,
    is_utc,
    is_uuid7,
    not_refused,
    unit,
    with_cosine,
)

pytestmark = pytest.mark.anyio

View = Callable[..., Any]
MODES = ("keyword", "vector", "hybrid")


def kn(view: Any) -> Any:
    return store(view, "knowledge")


def word() -> str:
    """A made-up word no other test uses (letters only: it stems alike on both backends)."""
    return "zq" + "".join(chr(ord("a") + int(c, 16)) for c in secrets.token_hex(4))


def vec() -> np.ndarray:
    """A random unit vector of the suite's dimension (unrelated to every other test's)."""
    return unit(secrets.randbelow(2**31))


def collections_of(hits: Sequence[KnowledgeHit]) -> set[str]:
    return {hit.collection_id for hit in hits}


def doc_ids(hits: Sequence[KnowledgeHit]) -> list[str]:
    return [hit.document_id for hit in hits]


def ids(collections: Sequence[KnowledgeCollection]) -> list[str]:
    return [c.id for c in collections]


async def grant_each(owner: Any, collection_id: str, grants: Sequence[tuple[Any, str]]) -> None:
    """``owner`` grants each agent (a view) its permission on the collection, in order."""
    for grantee, permission in grants:
        await kn(owner).grant(collection_id, grantee.agent_id, permission)


@asynccontextmanager
async def library_collection(
    owner: Any, name: str, visibility: str
) -> AsyncIterator[KnowledgeCollection]:
    """A ``family``/``public`` collection of ``owner``, deleted when the block ends: every agent
    in the module's store reads it, and other tests count what their agents read."""
    library = await kn(owner).create_collection(name, visibility=visibility)
    try:
        yield library
    finally:
        await kn(owner).delete_collection(library.id)


async def every_mode(
    knowledge: Any, query: str, vector: np.ndarray, **options: Any
) -> dict[str, list[KnowledgeHit]]:
    """The same query in keyword, vector and hybrid mode."""
    return {
        mode: await knowledge.search(query, embedding=as_list(vector), mode=mode, **options)
        for mode in MODES
    }


# --- collections and ownership -----------------------------------------------------------------


async def test_a_malformed_id_is_refused_by_every_call(view: View) -> None:
    """An id that is not text, empty, longer than MAX_ID_CHARS or holding NUL is a
    ValidationError for every call that takes one (a well-formed id of nothing is not found)."""
    a = view("a")
    k = kn(a)
    for bad in MALFORMED_IDS:
        problems = await not_refused(
            ValidationError,
            {
                "get_collection": lambda bad=bad: k.get_collection(bad),
                "delete_collection": lambda bad=bad: k.delete_collection(bad),
                "grant": lambda bad=bad: k.grant(bad, "someone", "read"),
                "revoke": lambda bad=bad: k.revoke(bad, "someone"),
                "list_grants": lambda bad=bad: k.list_grants(bad),
                "ingest_document": lambda bad=bad: k.ingest_document(bad, "t", "text"),
                "get_document": lambda bad=bad: k.get_document(bad),
                "list_documents": lambda bad=bad: k.list_documents(bad),
                "delete_document": lambda bad=bad: k.delete_document(bad),
                "search collection_ids": lambda bad=bad: k.search("x", collection_ids=[bad]),
            },
        )
        assert problems == [], repr(bad)


async def test_the_creator_owns_a_new_collection(view: View) -> None:
    """A new collection belongs to its creator (owner and permission 'owner'), is private by
    default with no documents, and is found by id and listed for read, write and owner."""
    a = view("a")
    created = await kn(a).create_collection(
        "Runbooks", description="how we deploy", metadata={"team": "ops", "n": 1}
    )
    assert is_uuid7(created.id)
    assert created.owner == a.agent_id
    assert created.permission == "owner"
    assert created.visibility == "private"
    assert created.name == "Runbooks"
    assert created.description == "how we deploy"
    assert created.metadata == {"n": 1, "team": "ops"}
    assert created.document_count == 0
    assert is_utc(created.created_at)
    assert await kn(a).get_collection(created.id) == created
    for permission in ("read", "write", "owner"):
        assert created.id in ids(await kn(a).list_collections(permission=permission)), permission


async def test_a_caller_supplied_collection_id_is_kept(view: View) -> None:
    """``create_collection(id=...)`` stores the collection under that id (migration, backfill)."""
    a = view("a")
    wanted = uuid7()
    assert (await kn(a).create_collection("backfilled", id=wanted)).id == wanted
    assert (await kn(a).get_collection(wanted)).name == "backfilled"


async def test_invalid_collections_and_documents_are_refused(view: View) -> None:
    """An empty name or title, an unknown visibility or permission, metadata that is not JSON or
    a document in a collection nobody created is refused (ValidationError / NotFoundError)."""
    a, b = view("a"), view("b")
    k = kn(a)
    c = await k.create_collection("valid")
    problems = await not_refused(
        ValidationError,
        {
            "empty name": lambda: k.create_collection("  "),
            "visibility team": lambda: k.create_collection("x", visibility="team"),
            "visibility bogus": lambda: k.create_collection("x", visibility="everyone"),
            "metadata NaN": lambda: k.create_collection("x", metadata={"v": float("nan")}),
            "empty title": lambda: k.ingest_document(c.id, "", "content"),
            "empty content": lambda: k.ingest_document(c.id, "title", "   "),
            "NUL content": lambda: k.ingest_document(c.id, "title", "a\x00b"),
            "permission bogus": lambda: k.grant(c.id, b.agent_id, "admin"),
            "long description": lambda: k.create_collection(
                "x", description="d" * (MAX_SUMMARY_CHARS + 1)
            ),
            "collection id not a UUID": lambda: k.create_collection("x", id="runbooks"),
            "collection id in upper case": lambda: k.create_collection("x", id=uuid7().upper()),
            "document id not a UUID": lambda: k.ingest_document(c.id, "t", "text", id="doc-1"),
            "one vector, not a list": lambda: k.ingest_document(
                c.id, "t", "text", embeddings=as_list(vec())
            ),
        },
    )
    assert problems == []
    assert await not_refused(
        NotFoundError, {"missing collection": lambda: k.ingest_document(uuid7(), "t", "text")}
    ) == []  # fmt: skip
    assert (await k.get_collection(c.id)).document_count == 0


async def test_collections_are_listed_by_name_then_id(view: View) -> None:
    """list_collections orders by name, then id (for equal names)."""
    a = view("a")
    k = kn(a)
    made = [await k.create_collection(name) for name in ("beta", "alpha", "gamma", "alpha")]
    listed = [c.id for c in await k.list_collections(include_library=False)]
    expected = sorted(made, key=lambda c: (c.name, c.id))
    assert [i for i in listed if i in {c.id for c in made}] == [c.id for c in expected]


# --- grants -------------------------------------------------------------------------------------


async def test_a_grant_lets_another_agent_search_the_collection(view: View) -> None:
    """Agent B neither sees nor finds A's private collection until A grants it 'read'; then B
    gets the collection (permission 'read') and finds its document in keyword, vector and hybrid
    search."""
    a, b = view("a"), view("b")
    term, vector = word(), vec()
    c = await kn(a).create_collection("harbor reports")
    doc = await kn(a).ingest_document(
        c.id, "Harbor report", f"the {term} harbor report for March", embeddings=[as_list(vector)]
    )
    assert await kn(b).get_collection(c.id) is None
    for mode, hits in (await every_mode(kn(b), term, vector, limit=50)).items():
        assert c.id not in collections_of(hits), mode
    granted = await kn(a).grant(c.id, b.agent_id, "read")
    assert (granted.collection_id, granted.agent_id, granted.permission, granted.granted_by) == (
        c.id, b.agent_id, "read", a.agent_id,
    )  # fmt: skip
    assert is_utc(granted.granted_at)
    seen = await kn(b).get_collection(c.id)
    assert seen is not None
    assert (seen.owner, seen.permission, seen.document_count) == (a.agent_id, "read", 1)
    assert c.id in ids(await kn(b).list_collections())
    for mode, hits in (await every_mode(kn(b), term, vector, limit=10)).items():
        assert doc.id in doc_ids(hits), mode
    assert await kn(b).get_document(doc.id) == doc
    assert doc.id in [d.id for d in await kn(b).list_documents(c.id)]


async def test_revoking_a_grant_removes_every_hit_at_once(view: View) -> None:
    """After A revokes B's grant, no document of the collection appears in any of B's searches
    (keyword, vector, hybrid, any limit) — all of them at once — the collection and its documents
    are not found, and a second revoke returns False."""
    a, b = view("a"), view("b")
    term, query = word(), vec()
    c = await kn(a).create_collection("shared notes")
    docs = [
        await kn(a).ingest_document(
            c.id, f"note {i}", f"{term} note number {i}",
            embeddings=[as_list(with_cosine(query, 0.95 - i * 0.01, seed=i))],
        )
        for i in range(30)
    ]  # fmt: skip
    await kn(a).grant(c.id, b.agent_id, "read")
    before = await every_mode(kn(b), term, query, limit=50)
    assert set(doc_ids(before["keyword"])) == {d.id for d in docs}
    assert {d.id for d in docs} <= set(doc_ids(before["hybrid"]))
    assert len([h for h in before["vector"] if h.collection_id == c.id]) == 30

    assert await kn(a).revoke(c.id, b.agent_id) is True
    for limit in (1, 10, 50, 1000):
        for mode, hits in (await every_mode(kn(b), term, query, limit=limit)).items():
            assert c.id not in collections_of(hits), (mode, limit)
    assert await kn(b).search(term, mode="keyword", collection_ids=[c.id], limit=50) == []
    assert await kn(b).get_collection(c.id) is None
    assert c.id not in ids(await kn(b).list_collections())
    assert all([await kn(b).get_document(d.id) is None for d in docs[:5]])
    assert b.agent_id not in {g.agent_id for g in await kn(a).list_grants(c.id)}
    assert await kn(a).revoke(c.id, b.agent_id) is False


async def test_an_ungranted_collection_never_shows_whatever_the_query(view: View) -> None:
    """B, granted A's collection X but not Y, never gets a hit from Y — not for Y's exact words,
    not for Y's exact vectors, in any mode, at any limit, nor when B names Y in collection_ids —
    although Y's documents match those queries better than X's do."""
    a, b = view("a"), view("b")
    shared = word()
    x = await kn(a).create_collection("granted")
    y = await kn(a).create_collection("not granted")
    await kn(a).grant(x.id, b.agent_id, "read")
    queries: list[tuple[str, np.ndarray]] = []
    for i in range(5):
        own, vector = word(), vec()
        queries.append((f"{shared} {own}", vector))
        await kn(a).ingest_document(
            y.id, f"secret {own}", f"{shared} {own} {own} confidential",
            embeddings=[as_list(vector)],
        )  # fmt: skip
        await kn(a).ingest_document(
            x.id, f"public {i}", f"{shared} note {i}",
            embeddings=[as_list(with_cosine(vector, 0.3, seed=i))],
        )  # fmt: skip
    x_hits = await kn(b).search(shared, mode="keyword", limit=50)
    assert collections_of(x_hits) == {x.id}
    assert len(x_hits) == 5
    for text, vector in queries:
        for query in (text, text.split()[1], shared):
            for limit in (1, 10, 100):
                for scope in (None, [y.id], [x.id, y.id]):
                    hits = await every_mode(kn(b), query, vector, limit=limit, collection_ids=scope)
                    for mode, found in hits.items():
                        assert y.id not in collections_of(found), (query, mode, limit, scope)
    assert await kn(b).search(shared, mode="keyword", collection_ids=[y.id]) == []


async def test_a_non_owner_cannot_grant_revoke_or_delete(view: View) -> None:
    """Only an owner grants, revokes and deletes: a reader and a writer each get
    PermissionDeniedError (a reader also for ingesting), and the grants stay as they were."""
    a, reader, writer, other = view("a"), view("reader"), view("writer"), view("other")
    c = await kn(a).create_collection("guarded")
    doc = await kn(a).ingest_document(c.id, "doc", "guarded content")
    await grant_each(a, c.id, [(reader, "read"), (writer, "write")])
    for v in (reader, writer):
        k = kn(v)
        problems = await not_refused(
            PermissionDeniedError,
            {
                "grant read to another": lambda k=k: k.grant(c.id, other.agent_id, "read"),
                "grant itself owner": lambda k=k, v=v: k.grant(c.id, v.agent_id, "owner"),
                "revoke another": lambda k=k: k.revoke(c.id, reader.agent_id),
                "revoke the owner": lambda k=k: k.revoke(c.id, a.agent_id),
                "delete": lambda k=k: k.delete_collection(c.id),
            },
        )
        assert problems == [], v.agent_id
    assert await not_refused(
        PermissionDeniedError,
        {
            "reader ingests": lambda: kn(reader).ingest_document(c.id, "t", "text"),
            "reader deletes a document": lambda: kn(reader).delete_document(doc.id),
        },
    ) == []  # fmt: skip
    grants = {g.agent_id: g.permission for g in await kn(a).list_grants(c.id)}
    assert grants.get(reader.agent_id) == "read"
    assert grants.get(writer.agent_id) == "write"
    assert other.agent_id not in grants
    assert await kn(other).get_collection(c.id) is None
    assert (await kn(a).get_collection(c.id)).document_count == 1


async def test_only_owners_list_grants(view: View) -> None:
    """Rule: list_grants is for owners only. The creator and an agent granted 'owner' list the
    grants; a reader, a writer and a library reader get PermissionDeniedError (as when they
    grant); an agent that cannot read the collection gets NotFoundError."""
    a, co_owner, reader, writer, other = (
        view(x) for x in ("a", "co-owner", "reader", "writer", "other")
    )
    c = await kn(a).create_collection("grant list")
    async with library_collection(a, "grant list library", "public") as library:
        await grant_each(a, c.id, [(co_owner, "owner"), (reader, "read"), (writer, "write")])
        expected = {co_owner.agent_id: "owner", reader.agent_id: "read", writer.agent_id: "write"}
        for v in (a, co_owner):
            grants = await kn(v).list_grants(c.id)
            assert {g.agent_id: g.permission for g in grants} == expected, v.agent_id
            assert [g.agent_id for g in grants] == sorted(expected), v.agent_id
        problems = await not_refused(
            PermissionDeniedError,
            {
                "reader": lambda: kn(reader).list_grants(c.id),
                "writer": lambda: kn(writer).list_grants(c.id),
                "library reader": lambda: kn(other).list_grants(library.id),
            },
        )
        assert problems == []
        assert await not_refused(
            NotFoundError, {"no access": lambda: kn(other).list_grants(c.id)}
        ) == []  # fmt: skip


async def test_the_creator_owns_its_collection_for_good(view: View) -> None:
    """Rule: the creator is the collection's permanent owner. No owner — not a co-owner, not the
    creator itself — can revoke, downgrade or re-grant it (ValidationError, and its permission
    stays 'owner'); owners granted later are ordinary grants that an owner can revoke, and once
    every one of them is gone the creator still owns the collection (it is never orphaned)."""
    a, b, c_agent = view("a"), view("b"), view("c")
    c = await kn(a).create_collection("kept for good")
    await grant_each(a, c.id, [(b, "owner"), (c_agent, "owner")])
    problems = await not_refused(
        ValidationError,
        {
            "co-owner revokes the creator": lambda: kn(b).revoke(c.id, a.agent_id),
            "co-owner downgrades the creator": lambda: kn(b).grant(c.id, a.agent_id, "read"),
            "co-owner grants the creator write": lambda: kn(b).grant(c.id, a.agent_id, "write"),
            "co-owner re-grants the creator": lambda: kn(b).grant(c.id, a.agent_id, "owner"),
            "creator revokes itself": lambda: kn(a).revoke(c.id, a.agent_id),
            "creator downgrades itself": lambda: kn(a).grant(c.id, a.agent_id, "read"),
        },
    )
    assert problems == []
    assert a.agent_id not in {g.agent_id for g in await kn(a).list_grants(c.id)}
    assert (await kn(a).get_collection(c.id)).permission == "owner"

    assert await kn(b).revoke(c.id, c_agent.agent_id) is True  # a co-owner revokes a co-owner
    assert await kn(c_agent).get_collection(c.id) is None
    assert await kn(a).revoke(c.id, b.agent_id) is True  # the creator revokes a co-owner
    assert await kn(b).get_collection(c.id) is None
    assert await kn(a).list_grants(c.id) == []
    kept = await kn(a).get_collection(c.id)
    assert (kept.owner, kept.permission) == (a.agent_id, "owner")
    assert c.id in ids(await kn(a).list_collections(permission="owner"))
    await kn(a).grant(c.id, b.agent_id, "read")  # and it still grants
    assert (await kn(b).get_collection(c.id)).permission == "read"


async def test_writers_and_owners_delete_documents_readers_cannot(view: View) -> None:
    """Rule: delete_document needs write or owner on the collection, whoever ingested the
    document: a writer, a granted owner and the creator delete; a reader and a library reader
    get PermissionDeniedError and an agent without access NotFoundError, and after a refusal the
    document is still there and searchable."""
    a, co_owner, writer, reader, other = (
        view(x) for x in ("a", "co-owner", "writer", "reader", "other")
    )
    term = word()
    c = await kn(a).create_collection("deletable")
    async with library_collection(a, "deletable library", "family") as library:
        await grant_each(a, c.id, [(co_owner, "owner"), (writer, "write"), (reader, "read")])
        docs = [await kn(a).ingest_document(c.id, f"doc {i}", f"{term} doc {i}") for i in range(2)]
        docs.append(await kn(writer).ingest_document(c.id, "writer's", f"{term} by the writer"))
        shelved = await kn(a).ingest_document(library.id, "shelved", f"{term} on the shelf")

        denied = await not_refused(
            PermissionDeniedError,
            {
                "reader": lambda: kn(reader).delete_document(docs[0].id),
                "library reader": lambda: kn(other).delete_document(shelved.id),
            },
        )
        assert denied == []
        assert await not_refused(
            NotFoundError, {"no access": lambda: kn(other).delete_document(docs[0].id)}
        ) == []  # fmt: skip
        assert await kn(a).get_document(docs[0].id) == docs[0]
        assert await kn(other).get_document(shelved.id) == shelved
        found = await kn(a).search(term, mode="keyword", limit=50)
        assert {d.id for d in docs} | {shelved.id} <= set(doc_ids(found))

        await kn(writer).delete_document(docs[0].id)  # the owner's document
        await kn(co_owner).delete_document(docs[2].id)  # the writer's document
        await kn(a).delete_document(docs[1].id)
        assert [await kn(a).get_document(d.id) for d in docs] == [None, None, None]
        assert (await kn(a).get_collection(c.id)).document_count == 0
        assert doc_ids(await kn(a).search(term, mode="keyword", limit=50)) == [shelved.id]


async def test_a_collection_the_agent_cannot_read_is_not_found(view: View) -> None:
    """To an agent without a grant, A's private collection is exactly like one that does not
    exist: get returns None and every other call raises NotFoundError (never
    PermissionDeniedError, which would confirm it exists); its documents are not found."""
    a, b = view("a"), view("b")
    c = await kn(a).create_collection("hidden")
    doc = await kn(a).ingest_document(c.id, "doc", "hidden content")
    k = kn(b)
    for target in (c.id, uuid7()):
        assert await k.get_collection(target) is None
        problems = await not_refused(
            NotFoundError,
            {
                "grant": lambda t=target: k.grant(t, b.agent_id, "read"),
                "revoke": lambda t=target: k.revoke(t, a.agent_id),
                "list grants": lambda t=target: k.list_grants(t),
                "ingest": lambda t=target: k.ingest_document(t, "t", "text"),
                "delete": lambda t=target: k.delete_collection(t),
            },
        )
        assert problems == [], target
        try:
            listed = await k.list_documents(target)
        except NotFoundError:
            listed = []
        assert listed == [], target
    assert await k.get_document(doc.id) is None
    assert await not_refused(
        NotFoundError,
        {"delete document": lambda: k.delete_document(doc.id),
         "delete missing document": lambda: k.delete_document(uuid7())},
    ) == []  # fmt: skip
    assert await kn(a).get_document(doc.id) == doc


async def test_write_implies_read(view: View) -> None:
    """A 'write' grant includes read: the writer ingests, finds its own and the owner's
    documents, and the collection is listed for read and write (not owner); a 'read' grant is
    listed for read only."""
    a, writer, reader = view("a"), view("writer"), view("reader")
    term = word()
    c = await kn(a).create_collection("co-written")
    mine = await kn(a).ingest_document(c.id, "owner's", f"{term} from the owner")
    await grant_each(a, c.id, [(writer, "write"), (reader, "read")])
    theirs = await kn(writer).ingest_document(c.id, "writer's", f"{term} from the writer")
    assert theirs.agent_id == writer.agent_id
    assert theirs.collection_id == c.id
    found = await kn(writer).search(term, mode="keyword", limit=10)
    assert set(doc_ids(found)) == {mine.id, theirs.id}
    assert set(doc_ids(await kn(reader).search(term, mode="keyword"))) == {mine.id, theirs.id}
    assert (await kn(writer).get_collection(c.id)).permission == "write"
    assert c.id in ids(await kn(writer).list_collections(permission="read"))
    assert c.id in ids(await kn(writer).list_collections(permission="write"))
    assert c.id not in ids(await kn(writer).list_collections(permission="owner"))
    assert c.id in ids(await kn(reader).list_collections(permission="read"))
    assert c.id not in ids(await kn(reader).list_collections(permission="write"))
    assert (await kn(a).get_collection(c.id)).document_count == 2


async def test_granting_again_replaces_the_permission(view: View) -> None:
    """One grant per agent and collection: granting again changes the permission (read -> write
    -> read), and the downgraded agent can no longer ingest."""
    a, b = view("a"), view("b")
    c = await kn(a).create_collection("regranted")
    await kn(a).grant(c.id, b.agent_id, "read")
    await kn(a).grant(c.id, b.agent_id, "write")
    grants = [g for g in await kn(a).list_grants(c.id) if g.agent_id == b.agent_id]
    assert [g.permission for g in grants] == ["write"]
    await kn(b).ingest_document(c.id, "allowed", "written while allowed")
    await kn(a).grant(c.id, b.agent_id, "read")
    grants = [g for g in await kn(a).list_grants(c.id) if g.agent_id == b.agent_id]
    assert [g.permission for g in grants] == ["read"]
    with pytest.raises(PermissionDeniedError):
        await kn(b).ingest_document(c.id, "refused", "written after the downgrade")


async def test_an_owner_grant_makes_a_co_owner(view: View) -> None:
    """An agent granted 'owner' acts as an owner: it grants and revokes other agents."""
    a, b, c_agent = view("a"), view("b"), view("c")
    c = await kn(a).create_collection("co-owned")
    await kn(a).grant(c.id, b.agent_id, "owner")
    assert (await kn(b).get_collection(c.id)).permission == "owner"
    granted = await kn(b).grant(c.id, c_agent.agent_id, "read")
    assert granted.granted_by == b.agent_id
    assert await kn(c_agent).get_collection(c.id) is not None
    assert await kn(b).revoke(c.id, c_agent.agent_id) is True
    assert await kn(c_agent).get_collection(c.id) is None


async def test_there_are_no_wildcard_grants(view: View) -> None:
    """A grant names one agent: '*', '%', '' and other patterns are refused, and no other agent
    gains access through such an attempt (nor through a grant to the agent id '_')."""
    a, b = view("a"), view("b")
    c = await kn(a).create_collection("no wildcards")
    for pattern in ("*", "%", "", "a*", "%-%", "*:read", "%a%"):
        with pytest.raises((InvalidAgentIdError, ValidationError)):
            await kn(a).grant(c.id, pattern, "read")
    assert {g.agent_id for g in await kn(a).list_grants(c.id)} <= {a.agent_id}
    assert await kn(b).get_collection(c.id) is None
    # "_" is a legal agent id (and a LIKE pattern): refused, or a grant to agent "_" alone
    try:
        await kn(a).grant(c.id, "_", "read")
    except ValidationError:
        pass
    assert await kn(b).get_collection(c.id) is None
    assert await kn(b).search(c.name, mode="keyword", collection_ids=[c.id]) == []


async def test_nobody_takes_a_collection_over(view: View) -> None:
    """No claiming: creating a collection under an existing collection's id fails (the owner
    keeps it, the other agent gains nothing), and a writer cannot make itself owner."""
    a, b = view("a"), view("b")
    c = await kn(a).create_collection("mine")
    with pytest.raises(StorageError):
        await kn(b).create_collection("claimed", id=c.id)
    assert await kn(b).get_collection(c.id) is None
    kept = await kn(a).get_collection(c.id)
    assert (kept.owner, kept.name) == (a.agent_id, "mine")
    await kn(a).grant(c.id, b.agent_id, "write")
    with pytest.raises(PermissionDeniedError):
        await kn(b).grant(c.id, b.agent_id, "owner")
    assert (await kn(b).get_collection(c.id)).permission == "write"


async def test_deleting_a_collection_removes_its_documents_and_grants(view: View) -> None:
    """Deleting a collection removes its documents, chunks and grants: nothing of it is found or
    searchable by its owner or former grantees, and a collection created again under the same
    id starts with no documents and grants nothing to them."""
    a, b = view("a"), view("b")
    term, vector = word(), vec()
    c = await kn(a).create_collection("doomed")
    doc = await kn(a).ingest_document(
        c.id, "doomed doc", f"{term} doomed", embeddings=[as_list(vector)]
    )
    await kn(a).grant(c.id, b.agent_id, "write")
    await kn(a).delete_collection(c.id)
    for v in (a, b):
        assert await kn(v).get_collection(c.id) is None
        assert await kn(v).get_document(doc.id) is None
        assert c.id not in ids(await kn(v).list_collections())
        for mode, hits in (await every_mode(kn(v), term, vector, limit=50)).items():
            assert doc.id not in doc_ids(hits), mode
    with pytest.raises(NotFoundError):
        await kn(a).list_grants(c.id)
    with pytest.raises(NotFoundError):
        await kn(a).delete_collection(c.id)

    again = await kn(a).create_collection("reborn", id=c.id)
    assert again.document_count == 0
    assert await kn(a).list_documents(c.id) == []
    assert {g.agent_id for g in await kn(a).list_grants(c.id)} <= {a.agent_id}
    assert await kn(b).get_collection(c.id) is None
    assert await kn(a).search(term, mode="keyword", collection_ids=[c.id]) == []


# --- get_stats --------------------------------------------------------------------------------

KNOWLEDGE_STATS = (
    "knowledge_collections", "knowledge_collections_writable", "knowledge_collections_owned",
    "knowledge_documents", "knowledge_chunks", "knowledge_embedded_chunks",
)  # fmt: skip


def knowledge_change(before: MemoryStats, after: MemoryStats) -> dict[str, int]:
    """How each knowledge count of get_stats() moved (the ones that did not move left out)."""
    moved = {name: getattr(after, name) - getattr(before, name) for name in KNOWLEDGE_STATS}
    return {name: change for name, change in moved.items() if change}


async def test_get_stats_counts_the_knowledge_an_agent_may_read(view: View) -> None:
    """get_stats() counts the collections an agent may read (its own, granted ones whatever the
    permission, the library) and of those the writable and owned ones, with their documents,
    chunks and embedded chunks — never a collection it cannot read; revoking a grant, deleting a
    document and deleting a collection take exactly their share away, for every agent."""
    me, stranger = view("me"), view("stranger")
    owners = {x: view(f"owner-{x}") for x in ("read", "write", "owner", "library", "hidden")}
    before, stranger_before = await me.memory.get_stats(), await stranger.memory.get_stats()

    mine = await kn(me).create_collection("my stats")
    content = long_text(word(), word(), paragraphs=4)
    n = len(chunk_text(content))
    long_doc = await kn(me).ingest_document(
        mine.id, "long", content, embeddings=[as_list(vec()) for _ in range(n)]
    )
    await kn(me).ingest_document(mine.id, "short", "a short note without vectors")
    granted = {}
    for permission in ("read", "write", "owner"):
        granted[permission] = await kn(owners[permission]).create_collection(permission)
        await kn(owners[permission]).grant(granted[permission].id, me.agent_id, permission)
    read_doc = await kn(owners["read"]).ingest_document(
        granted["read"].id, "read", "granted text", embeddings=[as_list(vec())]
    )
    await kn(owners["write"]).ingest_document(granted["write"].id, "write", "plain text")
    async with library_collection(owners["library"], "library", "family") as library:
        await kn(owners["library"]).ingest_document(
            library.id, "shelved", "library text", embeddings=[as_list(vec())]
        )
        hidden = await kn(owners["hidden"]).create_collection("hidden")
        await kn(owners["hidden"]).ingest_document(
            hidden.id, "hidden", "unseen", embeddings=[as_list(vec())]
        )
        await kn(owners["hidden"]).grant(hidden.id, stranger.agent_id, "read")
        await kn(owners["hidden"]).revoke(hidden.id, stranger.agent_id)

        after = await me.memory.get_stats()
        assert knowledge_change(before, after) == {
            "knowledge_collections": 5,  # mine, read, write, owner, library
            "knowledge_collections_writable": 3,  # mine, write, owner
            "knowledge_collections_owned": 2,  # mine, owner
            "knowledge_documents": 5,  # long, short, read, write, shelved
            "knowledge_chunks": n + 4,
            "knowledge_embedded_chunks": n + 2,  # long, read, shelved
        }
        assert knowledge_change(stranger_before, await stranger.memory.get_stats()) == {
            "knowledge_collections": 1, "knowledge_documents": 1, "knowledge_chunks": 1,
            "knowledge_embedded_chunks": 1,
        }  # fmt: skip

        await kn(owners["read"]).revoke(granted["read"].id, me.agent_id)
        await kn(me).delete_document(long_doc.id)
        assert knowledge_change(after, await me.memory.get_stats()) == {
            "knowledge_collections": -1, "knowledge_documents": -2,
            "knowledge_chunks": -(n + 1), "knowledge_embedded_chunks": -(n + 1),
        }  # fmt: skip
        assert await kn(me).get_document(read_doc.id) is None
    assert knowledge_change(stranger_before, await stranger.memory.get_stats()) == {}


# --- the shared library -------------------------------------------------------------------------


@pytest.mark.parametrize("visibility", ["family", "public"])
async def test_library_collections_are_readable_by_every_agent(view: View, visibility: str) -> None:
    """family and public collections are the shared library: any agent gets them (permission
    None without a grant), lists them unless include_library=False, and finds their documents,
    but may not ingest, grant or delete without a grant (PermissionDeniedError)."""
    a, b = view("a"), view("b")
    term, vector = word(), vec()
    c = await kn(a).create_collection("handbook", visibility=visibility)
    try:
        doc = await kn(a).ingest_document(
            c.id, "handbook", f"{term} handbook page", embeddings=[as_list(vector)]
        )
        seen = await kn(b).get_collection(c.id)
        assert seen is not None
        assert (seen.visibility, seen.permission, seen.owner) == (visibility, None, a.agent_id)
        assert c.id in ids(await kn(b).list_collections())
        assert c.id in ids(await kn(b).list_collections(include_library=True))
        assert c.id not in ids(await kn(b).list_collections(include_library=False))
        assert c.id not in ids(await kn(b).list_collections(permission="write"))
        for mode, hits in (await every_mode(kn(b), term, vector, limit=10)).items():
            assert doc.id in doc_ids(hits), mode
        assert await kn(b).get_document(doc.id) == doc
        k = kn(b)
        problems = await not_refused(
            PermissionDeniedError,
            {
                "ingest": lambda: k.ingest_document(c.id, "t", "text"),
                "grant": lambda: k.grant(c.id, b.agent_id, "write"),
                "delete": lambda: k.delete_collection(c.id),
                "delete document": lambda: k.delete_document(doc.id),
            },
        )
        assert problems == []
    finally:
        await kn(a).delete_collection(c.id)


# --- documents and chunks -----------------------------------------------------------------------


def long_text(first: str, last: str, paragraphs: int = 12) -> str:
    """Several paragraphs of varied sentences (about 400 characters each), ``first`` in the
    first sentence and ``last`` in the final one."""
    sentences = [
        "The deploy pipeline builds every package from a clean checkout.",
        "Security fixes are backported to the stable branch within a week.",
        "A regression in the resolver was traced to a stale cache entry.",
        "Maintainers review each upload before it reaches the archive.",
        "The test matrix covers three architectures and two compilers.",
        "Documentation was updated to describe the new configuration keys.",
    ]
    body = []
    for p in range(paragraphs):
        body.append(" ".join(sentences[(p + i) % len(sentences)] for i in range(6)))
    body[0] = f"{first} opens this document. " + body[0]
    body[-1] += f" It closes with {last}."
    return "\n\n".join(body)


async def test_a_long_document_is_stored_as_chunk_text_chunks(view: View) -> None:
    """A long document is split by chunk_text: chunk_count is its number of chunks, each hit
    carries its chunk's index and exact text, words at the start and the end are found in the
    first and last chunk, and the document keeps its whole content."""
    a = view("a")
    first, last = word(), word()
    content = long_text(first, last)
    chunks = chunk_text(content)
    assert chunk_text(content, size=CHUNK_CHARS, overlap=CHUNK_OVERLAP) == chunks
    assert len(chunks) >= 4
    c = await kn(a).create_collection("long reads")
    doc = await kn(a).ingest_document(c.id, "A long document", content)
    assert doc.chunk_count == len(chunks)
    assert doc.content == content
    assert await kn(a).get_document(doc.id) == doc
    head = await kn(a).search(first, mode="keyword", collection_ids=[c.id])
    assert [(h.document_id, h.chunk_index, h.text) for h in head] == [(doc.id, 0, chunks[0])]
    tail = await kn(a).search(last, mode="keyword", collection_ids=[c.id])
    assert [(h.chunk_index, h.text) for h in tail] == [(len(chunks) - 1, chunks[-1])]
    assert all(h.title == "A long document" and h.collection_id == c.id for h in head + tail)


async def test_chunk_embeddings_make_each_chunk_vector_searchable(view: View) -> None:
    """With one embedding per chunk (in chunk order), a vector search for chunk j's embedding
    returns chunk j first, with score 1 (cosine), and every chunk of the document is searchable."""
    a = view("a")
    content = long_text(word(), word())
    chunks = chunk_text(content)
    vectors = [vec() for _ in chunks]
    c = await kn(a).create_collection("embedded")
    doc = await kn(a).ingest_document(
        c.id, "embedded", content, embeddings=[as_list(v) for v in vectors]
    )
    for j, vector in enumerate(vectors):
        hits = await kn(a).search(
            "x", embedding=as_list(vector), mode="vector", collection_ids=[c.id], limit=3
        )
        assert hits[0].document_id == doc.id
        assert (hits[0].chunk_index, hits[0].text) == (j, chunks[j])
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].vector_rank == 1
        assert hits[0].keyword_rank is None
    everything = await kn(a).search(
        "x", embedding=as_list(vectors[0]), mode="vector", collection_ids=[c.id], limit=100
    )
    assert sorted(h.chunk_index for h in everything) == list(range(len(chunks)))


async def test_embeddings_must_match_the_chunks(view: View) -> None:
    """Embeddings must be one per chunk of the right dimension: another count is a
    ValidationError and a wrong length a DimensionMismatchError, and nothing is stored."""
    a = view("a")
    c = await kn(a).create_collection("strict")
    short = "a short note"
    long = long_text(word(), word())
    n = len(chunk_text(long))
    k = kn(a)
    with pytest.raises(ValidationError):
        await k.ingest_document(c.id, "two for one", short, embeddings=[as_list(vec())] * 2)
    with pytest.raises(ValidationError):
        await k.ingest_document(c.id, "none for one", short, embeddings=[])
    with pytest.raises(ValidationError):
        await k.ingest_document(c.id, "too few", long, embeddings=[as_list(vec())] * (n - 1))
    with pytest.raises(ValidationError):
        await k.ingest_document(c.id, "too many", long, embeddings=[as_list(vec())] * (n + 1))
    with pytest.raises(DimensionMismatchError):
        await k.ingest_document(c.id, "short vector", short, embeddings=[[0.1] * 3])
    with pytest.raises(DimensionMismatchError):
        await k.ingest_document(
            c.id, "one bad of many", long,
            embeddings=[as_list(vec())] * (n - 1) + [[0.5] * (EMBEDDING_DIM + 1)],
        )  # fmt: skip
    with pytest.raises(ValidationError):
        await k.ingest_document(c.id, "NaN", short, embeddings=[[float("nan")] * EMBEDDING_DIM])
    assert (await k.get_collection(c.id)).document_count == 0
    assert await k.list_documents(c.id) == []


async def test_documents_without_embeddings_are_found_by_keyword_only(view: View) -> None:
    """A document ingested without embeddings is found by keyword and hybrid search (hybrid
    without an embedding is keyword only), never by vector search."""
    a = view("a")
    term = word()
    c = await kn(a).create_collection("plain")
    doc = await kn(a).ingest_document(c.id, "plain", f"{term} without vectors")
    keyword = await kn(a).search(term, mode="keyword", collection_ids=[c.id])
    assert doc_ids(keyword) == [doc.id]
    hybrid = await kn(a).search(term, collection_ids=[c.id])
    assert hybrid == keyword  # the same hits, keyword scores and ranks: no fusion of one list
    vector_hits = await kn(a).search(
        term, embedding=as_list(vec()), mode="vector", collection_ids=[c.id]
    )
    assert vector_hits == []


async def test_documents_are_listed_counted_and_deleted(view: View) -> None:
    """list_documents pages a collection's documents newest first; delete_document (write
    needed) removes the document and its chunks from search and from document_count."""
    a, writer = view("a"), view("writer")
    term = word()
    c = await kn(a).create_collection("paged")
    await kn(a).grant(c.id, writer.agent_id, "write")
    docs = [await kn(a).ingest_document(c.id, f"doc {i}", f"{term} doc {i}") for i in range(5)]
    newest_first = [d.id for d in reversed(docs)]
    assert [d.id for d in await kn(a).list_documents(c.id)] == newest_first
    assert [d.id for d in await kn(a).list_documents(c.id, limit=2, offset=1)] == newest_first[1:3]
    assert (await kn(a).get_collection(c.id)).document_count == 5
    await kn(writer).delete_document(docs[0].id)
    await kn(a).delete_document(docs[1].id)
    assert await kn(a).get_document(docs[0].id) is None
    assert set(doc_ids(await kn(a).search(term, mode="keyword", limit=50))) == {
        d.id for d in docs[2:]
    }
    assert (await kn(a).get_collection(c.id)).document_count == 3
    with pytest.raises(NotFoundError):
        await kn(a).delete_document(docs[0].id)


async def test_collection_ids_restrict_the_search(view: View) -> None:
    """``collection_ids`` limits the search to those of the agent's readable collections."""
    a = view("a")
    term = word()
    first = await kn(a).create_collection("first")
    second = await kn(a).create_collection("second")
    one = await kn(a).ingest_document(first.id, "one", f"{term} one")
    two = await kn(a).ingest_document(second.id, "two", f"{term} two")
    k = kn(a)
    assert set(doc_ids(await k.search(term, mode="keyword"))) == {one.id, two.id}
    assert doc_ids(await k.search(term, mode="keyword", collection_ids=[first.id])) == [one.id]
    assert doc_ids(await k.search(term, mode="keyword", collection_ids=[second.id])) == [two.id]
    both = await k.search(term, mode="keyword", collection_ids=[first.id, second.id])
    assert set(doc_ids(both)) == {one.id, two.id}
    assert await k.search(term, mode="keyword", collection_ids=[uuid7()]) == []


async def test_hits_carry_ranks_and_scores_by_mode(view: View) -> None:
    """Keyword hits have keyword ranks only; vector hits vector ranks only and score = cosine;
    hybrid hits both ranks where present and score = sum of 1 / (60 + rank), best first."""
    a = view("a")
    term, query = word(), vec()
    c = await kn(a).create_collection("ranked")
    both = await kn(a).ingest_document(
        c.id, "both", f"{term} close", embeddings=[as_list(with_cosine(query, 0.9, 1))]
    )
    vector_only = await kn(a).ingest_document(
        c.id, "vector only", "unrelated words", embeddings=[as_list(with_cosine(query, 0.8, 2))]
    )
    keyword = await kn(a).search(term, mode="keyword", collection_ids=[c.id])
    assert [(h.document_id, h.keyword_rank, h.vector_rank) for h in keyword] == [(both.id, 1, None)]
    vector = await kn(a).search(
        term, embedding=as_list(query), mode="vector", collection_ids=[c.id]
    )
    assert [(h.document_id, h.vector_rank, h.keyword_rank) for h in vector] == [
        (both.id, 1, None), (vector_only.id, 2, None),
    ]  # fmt: skip
    assert [h.score for h in vector] == pytest.approx([0.9, 0.8], abs=1e-4)
    hybrid = await kn(a).search(
        term, embedding=as_list(query), mode="hybrid", collection_ids=[c.id]
    )
    assert [(h.document_id, h.keyword_rank, h.vector_rank) for h in hybrid] == [
        (both.id, 1, 1), (vector_only.id, None, 2),
    ]  # fmt: skip
    assert [h.score for h in hybrid] == pytest.approx([2 / (RRF_K + 1), 1 / (RRF_K + 2)], rel=1e-6)


async def test_keyword_search_requires_every_term(view: View) -> None:
    """Knowledge keyword search ANDs the query's terms, like memory search."""
    a = view("a")
    one, two = word(), word()
    c = await kn(a).create_collection("and")
    both = await kn(a).ingest_document(c.id, "both", f"{one} and {two}")
    await kn(a).ingest_document(c.id, "first only", f"{one} alone")
    await kn(a).ingest_document(c.id, "second only", f"{two} alone")
    found = await kn(a).search(f"{one} {two}", mode="keyword", collection_ids=[c.id])
    assert doc_ids(found) == [both.id]


# --- PostgreSQL: the same denials for raw SQL on the app role's connection ----------------------


async def refused(conn: Any, agent: str, sql: str, *args: Any) -> str:
    """Run ``sql`` in a transaction as ``agent``; the name of the error it raised ('' if none)."""
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.agent_id', $1, true)", agent)
            await conn.execute(sql, *args)
    except asyncpg.PostgresError as exc:
        return type(exc).__name__
    return ""


async def test_postgres_raw_sql_hides_ungranted_collections(
    postgres_adapter: Any,
    postgres_server: PostgresServer,
    pg_database: str,
    new_agent: Callable[..., str],
) -> None:
    """PostgreSQL: on a raw app-role connection with B's agent id set, no row of A's ungranted
    collection is visible in any knowledge table (collection, grants, documents, chunks),
    UPDATE and DELETE affect none, and B cannot insert a grant for itself; after A grants B
    read, the rows become visible, and after revoking they are gone again."""
    a = postgres_adapter.for_agent(new_agent("a"))
    b = postgres_adapter.for_agent(new_agent("b"))
    c = await kn(a).create_collection("raw guarded")
    await kn(a).grant(c.id, new_agent("third"), "read")  # a grant row B must not see
    await kn(a).ingest_document(
        c.id, "raw doc", long_text(word(), word(), paragraphs=4),
        embeddings=None,
    )  # fmt: skip
    owner = await asyncpg.connect(postgres_server.dsn_for("agentbus_owner", pg_database))
    try:
        tables = [
            row["table_name"]
            for row in await owner.fetch(
                "SELECT DISTINCT table_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND column_name = 'collection_id'"
                " ORDER BY table_name"
            )
        ]
    finally:
        await owner.close()
    assert "knowledge_collection_grants" in tables, tables
    assert len(tables) >= 3, f"expected grants, documents and chunks tables: {tables}"
    app = await asyncpg.connect(postgres_server.dsn_for("agentbus_app", pg_database))

    async def visible(agent: str) -> dict[str, int]:
        counts = {}
        async with app.transaction():
            await app.execute("SELECT set_config('app.agent_id', $1, true)", agent)
            counts["knowledge_collections"] = await app.fetchval(
                "SELECT count(*) FROM knowledge_collections WHERE id = $1", c.id
            )
            for table in tables:
                counts[table] = await app.fetchval(
                    f"SELECT count(*) FROM {table} WHERE collection_id = $1", c.id
                )
        return counts

    try:
        owner_view = await visible(a.agent_id)
        assert all(owner_view.values()), owner_view  # the owner's id sees every kind of row
        assert not any((await visible(b.agent_id)).values())
        async with app.transaction():
            await app.execute("SELECT set_config('app.agent_id', $1, true)", b.agent_id)
            assert await app.execute(
                "UPDATE knowledge_collections SET name = 'stolen' WHERE id = $1", c.id
            ) == "UPDATE 0"  # fmt: skip
            for table in tables:
                assert await app.execute(
                    f"DELETE FROM {table} WHERE collection_id = $1", c.id
                ) == "DELETE 0"  # fmt: skip
        claim = (
            "INSERT INTO knowledge_collection_grants (collection_id, agent_id, permission,"
            " granted_by) VALUES ($1, $2, 'owner', $2)"
        )
        assert await refused(app, b.agent_id, claim, c.id, b.agent_id) == (
            "InsufficientPrivilegeError"
        )
        await kn(a).grant(c.id, b.agent_id, "read")
        granted = await visible(b.agent_id)
        assert granted["knowledge_collections"] == 1
        assert all(granted[t] for t in tables if t != "knowledge_collection_grants"), granted
        await kn(a).revoke(c.id, b.agent_id)
        assert not any((await visible(b.agent_id)).values())
    finally:
        await app.close()
    assert (await kn(a).get_collection(c.id)).name == "raw guarded"
