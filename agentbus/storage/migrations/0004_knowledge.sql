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
-- The exact vector path scans a collection's embedded chunks.
CREATE INDEX knowledge_chunks_embedded_idx ON knowledge_chunks (collection_id)
    WHERE embedding IS NOT NULL;

-- Embedded chunks per collection, kept by statement-level triggers on the chunks (below): vector
-- search picks its path by the permitted count, and summing ten of these costs a few µs where
-- counting index entries up to the bound cost 0.4-0.8 ms a search. Agents cannot set it.
ALTER TABLE knowledge_collections
    ADD COLUMN embedded_chunks bigint NOT NULL DEFAULT 0 CHECK (embedded_chunks >= 0);

CREATE FUNCTION agentbus_count_embedded_chunks() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE public.knowledge_collections c SET embedded_chunks = c.embedded_chunks + n.n
        FROM (SELECT collection_id, count(*) AS n FROM added WHERE embedding IS NOT NULL
              GROUP BY collection_id) n
        WHERE c.id = n.collection_id;
    ELSE
        UPDATE public.knowledge_collections c SET embedded_chunks = c.embedded_chunks - n.n
        FROM (SELECT collection_id, count(*) AS n FROM removed WHERE embedding IS NOT NULL
              GROUP BY collection_id) n
        WHERE c.id = n.collection_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER knowledge_chunks_counted_insert AFTER INSERT ON knowledge_chunks
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION agentbus_count_embedded_chunks();
CREATE TRIGGER knowledge_chunks_counted_delete AFTER DELETE ON knowledge_chunks
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION agentbus_count_embedded_chunks();

-- The creator stays the owner, and the count is the triggers' alone (they update it one
-- trigger level down; an agent's own UPDATE runs at level 1).
CREATE FUNCTION agentbus_keep_collection() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.agent_id IS DISTINCT FROM OLD.agent_id
       OR (NEW.embedded_chunks IS DISTINCT FROM OLD.embedded_chunks AND pg_trigger_depth() < 2)
    THEN
        RAISE EXCEPTION 'the id, agent_id and embedded_chunks of a collection cannot be changed'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER knowledge_collections_keep BEFORE UPDATE ON knowledge_collections
    FOR EACH ROW EXECUTE FUNCTION agentbus_keep_collection();

-- Permission helpers (SECURITY DEFINER: they read grants and collections past the policies) ----
-- PL/pgSQL rather than SQL: a SQL function that cannot be inlined (SECURITY DEFINER, SET) plans
-- its query on every call, and these run in every policy check and search (measured: 0.3 ms
-- a call as SQL, a few µs with PL/pgSQL's cached plan).

-- Collection ids the current agent holds a grant on.
CREATE FUNCTION agentbus_granted_collections() RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(g.collection_id ORDER BY g.collection_id), '{}')
            FROM public.knowledge_collection_grants g
            WHERE g.agent_id = NULLIF(current_setting('app.agent_id', true), ''));
END
$$;

-- Collection ids the current agent may read: its own, granted ones and the library; with
-- p_among, only those among p_among. One call per statement where a policy or a search uses it;
-- each arm is an index range (agent_id, the library's partial index, the grantee index).
CREATE FUNCTION agentbus_readable_collections(p_among text[] DEFAULT NULL) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_agent text := NULLIF(current_setting('app.agent_id', true), '');
BEGIN
    IF v_agent IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN (SELECT coalesce(array_agg(r.id ORDER BY r.id), '{}')
            FROM (
                SELECT c.id FROM public.knowledge_collections c WHERE c.agent_id = v_agent
                UNION
                SELECT c.id FROM public.knowledge_collections c
                WHERE c.visibility IN ('family', 'public')
                UNION
                SELECT g.collection_id FROM public.knowledge_collection_grants g
                WHERE g.agent_id = v_agent
            ) r
            WHERE p_among IS NULL OR r.id = ANY (p_among));
END
$$;

-- What the current agent may do with a collection through ownership or a grant: 'owner' (its
-- creator), the grant's permission, or NULL (none; the library is read through its visibility).
CREATE FUNCTION agentbus_collection_permission(p_collection_id text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_agent text := NULLIF(current_setting('app.agent_id', true), '');
BEGIN
    RETURN (SELECT CASE WHEN c.agent_id = v_agent THEN 'owner'
                        ELSE (SELECT g.permission FROM public.knowledge_collection_grants g
                              WHERE g.collection_id = c.id AND g.agent_id = v_agent) END
            FROM public.knowledge_collections c
            WHERE c.id = p_collection_id);
END
$$;

CREATE FUNCTION agentbus_can_read_collection(p_collection_id text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_agent text := NULLIF(current_setting('app.agent_id', true), '');
BEGIN
    RETURN v_agent IS NOT NULL AND EXISTS (
        SELECT 1 FROM public.knowledge_collections c
        WHERE c.id = p_collection_id
          AND (c.agent_id = v_agent OR c.visibility IN ('family', 'public')
               OR EXISTS (SELECT 1 FROM public.knowledge_collection_grants g
                          WHERE g.collection_id = c.id AND g.agent_id = v_agent)));
END
$$;

CREATE FUNCTION agentbus_can_write_collection(p_collection_id text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN coalesce(public.agentbus_collection_permission(p_collection_id) IN ('write', 'owner'),
                    false);
END
$$;

CREATE FUNCTION agentbus_owns_collection(p_collection_id text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN coalesce(public.agentbus_collection_permission(p_collection_id) = 'owner', false);
END
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

REVOKE ALL ON FUNCTION agentbus_count_embedded_chunks() FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_keep_collection() FROM PUBLIC;
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
