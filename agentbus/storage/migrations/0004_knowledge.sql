-- 0004 — knowledge collections with per-agent grants (issue 6; DESIGN.md §4 "RLS that holds").
--
-- 0001 made placeholder knowledge tables that no agentbus release ever wrote; this migration
-- gives them the contract's shape (KnowledgeStore in _protocol.py) and replaces their 0002
-- policies. It refuses to run over rows someone wrote by hand rather than guess what they meant.
--
-- Rules, enforced here for the app role and again by PgAdapter's queries:
-- * a collection is readable by its creator, by agents holding a grant on it, and by every agent
--   when its visibility is family/public (the shared library);
-- * permissions are read < write < owner (write implies read); the creator owns the collection
--   for good (agent_id cannot change); only an owner grants, revokes, changes or deletes it;
-- * a grant names one agent (the agent-id rule: no '*', no pattern, no empty id), so there are no
--   wildcard grants; and nobody becomes an owner except through an owner's grant, so a collection
--   whose owners are gone cannot be claimed;
-- * documents and chunks are read by whoever may read their collection and written (ingested,
--   deleted) by whoever may write it.
-- Deleting a collection removes its documents, chunks and grants (ON DELETE CASCADE: referential
-- actions run as the table owner, past the policies, once the delete policy allowed the row).

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM knowledge_collections) OR EXISTS (SELECT 1 FROM knowledge_documents)
       OR EXISTS (SELECT 1 FROM knowledge_chunks)
       OR EXISTS (SELECT 1 FROM knowledge_collection_grants) THEN
        RAISE EXCEPTION 'the knowledge tables hold rows that agentbus did not write; move them '
            'away (they do not fit the schema of migration 0004) and migrate again';
    END IF;
END
$$;

DROP POLICY knowledge_collections_select ON knowledge_collections;
DROP POLICY knowledge_collections_insert ON knowledge_collections;
DROP POLICY knowledge_collections_update ON knowledge_collections;
DROP POLICY knowledge_collections_delete ON knowledge_collections;
DROP POLICY knowledge_collection_grants_select ON knowledge_collection_grants;
DROP POLICY knowledge_collection_grants_insert ON knowledge_collection_grants;
DROP POLICY knowledge_collection_grants_delete ON knowledge_collection_grants;
DROP POLICY knowledge_documents_select ON knowledge_documents;
DROP POLICY knowledge_documents_write ON knowledge_documents;
DROP POLICY knowledge_chunks_select ON knowledge_chunks;
DROP POLICY knowledge_chunks_write ON knowledge_chunks;

-- Tables ---------------------------------------------------------------------------------------

-- Collections are private, family or public (no team visibility: grants name agents instead).
ALTER TABLE knowledge_collections DROP COLUMN team_id;  -- and the CHECK that involved it
ALTER TABLE knowledge_collections
    DROP CONSTRAINT knowledge_collections_visibility_check,
    ADD CONSTRAINT knowledge_collections_visibility
        CHECK (visibility IN ('private', 'family', 'public'));
CREATE INDEX knowledge_collections_library_idx ON knowledge_collections (visibility)
    WHERE visibility IN ('family', 'public');
-- The creator stays the owner: no UPDATE may move a collection to another agent.
CREATE TRIGGER knowledge_collections_keep_owner BEFORE UPDATE ON knowledge_collections
    FOR EACH ROW EXECUTE FUNCTION agentbus_keep_owner();

ALTER TABLE knowledge_collection_grants RENAME COLUMN created_at TO granted_at;
ALTER TABLE knowledge_collection_grants
    DROP CONSTRAINT knowledge_collection_grants_permission_check,
    ADD CONSTRAINT knowledge_collection_grants_permission
        CHECK (permission IN ('read', 'write', 'owner')),
    -- One named agent per grant (the agentbus._ids rule, with a letter or digit: '_' or '.'
    -- alone reads like a pattern): nothing that could act as a wildcard.
    ADD CONSTRAINT knowledge_collection_grants_one_agent
        CHECK (agent_id ~ '^[a-z0-9._-]{1,64}$' AND agent_id ~ '[a-z0-9]');

ALTER TABLE knowledge_documents
    DROP COLUMN source_url,
    ADD COLUMN content text NOT NULL,
    ADD COLUMN chunk_count integer NOT NULL CHECK (chunk_count >= 1),
    ADD CONSTRAINT knowledge_documents_in_collection UNIQUE (id, collection_id);
DROP INDEX knowledge_documents_collection_idx;
CREATE INDEX knowledge_documents_collection_idx
    ON knowledge_documents (collection_id, created_at DESC, id DESC);

-- A chunk lies in its document's collection (the search filters chunks by collection_id).
ALTER TABLE knowledge_chunks
    DROP CONSTRAINT knowledge_chunks_document_id_fkey,
    ADD CONSTRAINT knowledge_chunks_document FOREIGN KEY (document_id, collection_id)
        REFERENCES knowledge_documents (id, collection_id) ON DELETE CASCADE,
    ADD CONSTRAINT knowledge_chunks_position UNIQUE (document_id, chunk_index);
-- Index-only counts of the permitted embedded chunks (vector search picks its path by it).
CREATE INDEX knowledge_chunks_embedded_idx ON knowledge_chunks (collection_id)
    WHERE embedding IS NOT NULL;

-- Permission helpers (SECURITY DEFINER: they read grants and collections past the policies) ----

-- Collection ids the current agent holds a grant on.
CREATE FUNCTION agentbus_granted_collections() RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce(array_agg(g.collection_id ORDER BY g.collection_id), '{}')
    FROM public.knowledge_collection_grants g
    WHERE g.agent_id = NULLIF(current_setting('app.agent_id', true), '')
$$;

-- Collection ids the current agent may read: its own, granted ones and the library; with
-- p_among, only those among p_among. One call per statement where a policy or a search uses it;
-- each arm is an index range (agent_id, the library's partial index, the grantee index).
CREATE FUNCTION agentbus_readable_collections(p_among text[] DEFAULT NULL) RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce(array_agg(r.id ORDER BY r.id), '{}')
    FROM (
        SELECT c.id FROM public.knowledge_collections c
        WHERE c.agent_id = NULLIF(current_setting('app.agent_id', true), '')
        UNION
        SELECT c.id FROM public.knowledge_collections c
        WHERE c.visibility IN ('family', 'public')
        UNION
        SELECT g.collection_id FROM public.knowledge_collection_grants g
        WHERE g.agent_id = NULLIF(current_setting('app.agent_id', true), '')
    ) r
    WHERE NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL
      AND (p_among IS NULL OR r.id = ANY (p_among))
$$;

CREATE FUNCTION agentbus_can_read_collection(p_collection_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT p_collection_id = ANY (public.agentbus_readable_collections(ARRAY[p_collection_id]))
$$;

-- What the current agent may do with a collection through ownership or a grant: 'owner' (its
-- creator), the grant's permission, or NULL (the library is read through its visibility).
CREATE FUNCTION agentbus_collection_permission(p_collection_id text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE WHEN c.agent_id = NULLIF(current_setting('app.agent_id', true), '') THEN 'owner'
                ELSE (SELECT g.permission FROM public.knowledge_collection_grants g
                      WHERE g.collection_id = c.id
                        AND g.agent_id = NULLIF(current_setting('app.agent_id', true), ''))
           END
    FROM public.knowledge_collections c
    WHERE c.id = p_collection_id
$$;

CREATE FUNCTION agentbus_can_write_collection(p_collection_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce(public.agentbus_collection_permission(p_collection_id) IN ('write', 'owner'),
                    false)
$$;

CREATE FUNCTION agentbus_owns_collection(p_collection_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce(public.agentbus_collection_permission(p_collection_id) = 'owner', false)
$$;

-- Policies -------------------------------------------------------------------------------------
-- Reads carry index-friendly arms (`collection_id = ANY (…)` with the array computed once, as an
-- InitPlan); writes check permissions with the helpers.

CREATE POLICY knowledge_collections_select ON knowledge_collections FOR SELECT USING (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    OR (visibility IN ('family', 'public')
        AND NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL)
    OR id = ANY ((SELECT agentbus_granted_collections())::text[]));
CREATE POLICY knowledge_collections_insert ON knowledge_collections FOR INSERT
    WITH CHECK (agent_id = NULLIF(current_setting('app.agent_id', true), ''));
CREATE POLICY knowledge_collections_update ON knowledge_collections FOR UPDATE
    USING (agentbus_owns_collection(id)) WITH CHECK (agentbus_owns_collection(id));
CREATE POLICY knowledge_collections_delete ON knowledge_collections FOR DELETE
    USING (agentbus_owns_collection(id));

-- A grantee sees its own grant; owners see, make, change and remove every grant.
CREATE POLICY knowledge_collection_grants_select ON knowledge_collection_grants FOR SELECT
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), '')
           OR agentbus_owns_collection(collection_id));
CREATE POLICY knowledge_collection_grants_insert ON knowledge_collection_grants FOR INSERT
    WITH CHECK (granted_by = NULLIF(current_setting('app.agent_id', true), '')
                AND agentbus_owns_collection(collection_id));
CREATE POLICY knowledge_collection_grants_update ON knowledge_collection_grants FOR UPDATE
    USING (agentbus_owns_collection(collection_id))
    WITH CHECK (granted_by = NULLIF(current_setting('app.agent_id', true), '')
                AND agentbus_owns_collection(collection_id));
CREATE POLICY knowledge_collection_grants_delete ON knowledge_collection_grants FOR DELETE
    USING (agentbus_owns_collection(collection_id));

CREATE POLICY knowledge_documents_select ON knowledge_documents FOR SELECT
    USING (collection_id = ANY ((SELECT agentbus_readable_collections())::text[]));
CREATE POLICY knowledge_documents_insert ON knowledge_documents FOR INSERT
    WITH CHECK (agent_id = NULLIF(current_setting('app.agent_id', true), '')
                AND agentbus_can_write_collection(collection_id));
CREATE POLICY knowledge_documents_delete ON knowledge_documents FOR DELETE
    USING (agentbus_can_write_collection(collection_id));

CREATE POLICY knowledge_chunks_select ON knowledge_chunks FOR SELECT
    USING (collection_id = ANY ((SELECT agentbus_readable_collections())::text[]));
CREATE POLICY knowledge_chunks_insert ON knowledge_chunks FOR INSERT
    WITH CHECK (agent_id = NULLIF(current_setting('app.agent_id', true), '')
                AND agentbus_can_write_collection(collection_id));
CREATE POLICY knowledge_chunks_delete ON knowledge_chunks FOR DELETE
    USING (agentbus_can_write_collection(collection_id));

REVOKE ALL ON FUNCTION agentbus_granted_collections() FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_readable_collections(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_can_read_collection(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_collection_permission(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_can_write_collection(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_owns_collection(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    agentbus_granted_collections(), agentbus_readable_collections(text[]),
    agentbus_can_read_collection(text), agentbus_collection_permission(text),
    agentbus_can_write_collection(text), agentbus_owns_collection(text)
TO agentbus_app;
