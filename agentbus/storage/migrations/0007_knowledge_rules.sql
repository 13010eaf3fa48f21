-- 0007 — Storage II rules aligned with the SQLite backend (issue 6).
--
-- The knowledge rules of 0004 already hold here: list_grants and every grant change are for
-- owners only; the creator owns its collection for good (agent_id cannot change); documents are
-- deleted by agents holding write or owner (knowledge_documents_delete / knowledge_chunks_delete).
-- What changes:
--
-- * The creator never holds a grant row, for raw SQL too: an owner's INSERT or UPDATE of a grant
--   naming the creator is refused (the adapter answers ValidationError before it gets here). So
--   there is nothing of the creator's to revoke or downgrade, and list_grants never shows it.
-- * Live candidates merge only into the agent's OWN memory item. 0006 let a merge reinforce any
--   visible item (another agent's family/public/team item) through a SECURITY DEFINER helper;
--   the contract treats another agent's row as "not found" for every mutation, as
--   memory.reinforce_item does. The helper goes, and a candidate can name as its result
--   (resolved_item_id) only an item of the agent's own, for raw SQL on the app role too.
-- * A candidate keeps the ids it was compared with and resolved to after that item is deleted
--   (a decision record), as on SQLite: the foreign keys that nulled them go. The policies still
--   check, when a row is written, that the item is visible (similar_item_id) or the agent's own
--   (resolved_item_id); foreign-key checks would bypass RLS anyway.
-- * Observation search breaks rank ties by id ascending, like every other search.

DROP POLICY knowledge_collection_grants_insert ON knowledge_collection_grants;
DROP POLICY knowledge_collection_grants_update ON knowledge_collection_grants;
CREATE POLICY knowledge_collection_grants_insert ON knowledge_collection_grants FOR INSERT
    WITH CHECK (granted_by = NULLIF(current_setting('app.agent_id', true), '')
                AND agentbus_owns_collection(collection_id)
                AND agent_id <> (SELECT kc.agent_id FROM knowledge_collections kc
                                 WHERE kc.id = collection_id));
CREATE POLICY knowledge_collection_grants_update ON knowledge_collection_grants FOR UPDATE
    USING (agentbus_owns_collection(collection_id))
    WITH CHECK (granted_by = NULLIF(current_setting('app.agent_id', true), '')
                AND agentbus_owns_collection(collection_id)
                AND agent_id <> (SELECT kc.agent_id FROM knowledge_collections kc
                                 WHERE kc.id = collection_id));

DROP FUNCTION agentbus_reinforce_visible_item(text, timestamptz);

ALTER TABLE live_candidates
    DROP CONSTRAINT live_candidates_matched_item_id_fkey,
    DROP CONSTRAINT live_candidates_resolved_item_id_fkey;

DROP POLICY live_candidates_insert ON live_candidates;
DROP POLICY live_candidates_update ON live_candidates;
CREATE POLICY live_candidates_insert ON live_candidates FOR INSERT WITH CHECK (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    AND (similar_item_id IS NULL
         OR EXISTS (SELECT 1 FROM memory_items m WHERE m.id = similar_item_id))
    AND (resolved_item_id IS NULL
         OR EXISTS (SELECT 1 FROM memory_items m
                    WHERE m.id = resolved_item_id AND m.agent_id = live_candidates.agent_id)));
CREATE POLICY live_candidates_update ON live_candidates FOR UPDATE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''))
    WITH CHECK (
        agent_id = NULLIF(current_setting('app.agent_id', true), '')
        AND (resolved_item_id IS NULL
             OR EXISTS (SELECT 1 FROM memory_items m
                        WHERE m.id = resolved_item_id AND m.agent_id = live_candidates.agent_id)));

CREATE OR REPLACE FUNCTION agentbus_search_observations(p_query text, p_limit integer)
RETURNS TABLE (id text, score real)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_agent text := NULLIF(current_setting('app.agent_id', true), '');
    v_query tsquery := plainto_tsquery('english', coalesce(p_query, ''));
BEGIN
    IF v_agent IS NULL OR numnode(v_query) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT o.id, ts_rank(o.summary_tsv, v_query) AS score
        FROM public.observations o
        WHERE o.summary_tsv @@ v_query AND o.agent_id = v_agent
        ORDER BY score DESC, o.id
        LIMIT p_limit;
END
$$;
