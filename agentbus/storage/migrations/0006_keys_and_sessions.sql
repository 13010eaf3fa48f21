-- 0006 — service keys, observations, model feedback and live candidates (issue 6).
--
-- 0001 made placeholder tables for these that no agentbus release ever wrote; this migration
-- gives them the contract's shape (_protocol.py: ServiceKeyStore, ObservationStore,
-- FeedbackStore, LiveCandidateStore). It refuses to run over rows written by hand. Every one of
-- them holds one agent's own rows: RLS (ENABLE + FORCE since 0002) lets an agent see and write
-- only rows whose agent_id is the transaction's app.agent_id.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM service_keys) OR EXISTS (SELECT 1 FROM observations)
       OR EXISTS (SELECT 1 FROM model_feedback) OR EXISTS (SELECT 1 FROM live_candidates) THEN
        RAISE EXCEPTION 'service_keys, observations, model_feedback or live_candidates hold rows '
            'that agentbus did not write; move them away (they do not fit the schema of '
            'migration 0006) and migrate again';
    END IF;
END
$$;

-- Service keys: one row per (agent, name), the current version only. The value is sealed in the
-- application (agentbus.storage._crypto, AES-256-GCM, envelope encryption): these columns hold
-- ciphertext, the wrapped data key, both nonces and the id of the master key that wrapped it —
-- never a plaintext, never pgcrypto. The policy service_keys_own (0002) keeps rows to their agent.
ALTER TABLE service_keys
    DROP CONSTRAINT service_keys_version,
    ADD COLUMN key_nonce bytea NOT NULL,
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN updated_at timestamptz NOT NULL,
    ADD CONSTRAINT service_keys_name UNIQUE (agent_id, name),
    ADD CONSTRAINT service_keys_version_positive CHECK (version >= 1),
    ADD CONSTRAINT service_keys_nonces CHECK (octet_length(nonce) = 12
                                              AND octet_length(key_nonce) = 12);
CREATE INDEX service_keys_key_id_idx ON service_keys (key_id);  -- master-key rotation

-- Observations: session events, searched by keyword over their summaries.
ALTER TABLE observations RENAME COLUMN content TO summary;
ALTER TABLE observations RENAME COLUMN metadata TO detail;
ALTER TABLE observations
    ALTER COLUMN session_id SET NOT NULL,
    ADD COLUMN tool text,
    ADD COLUMN started_at timestamptz NOT NULL,
    ADD COLUMN ended_at timestamptz,
    ADD COLUMN summary_tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', summary)) STORED,
    ADD CONSTRAINT observations_period CHECK (ended_at IS NULL OR ended_at >= started_at);
CREATE INDEX observations_session_idx
    ON observations (agent_id, session_id, created_at DESC, id DESC);
CREATE INDEX observations_fts_idx ON observations USING gin (summary_tsv);

-- Model feedback: the agent's self-evaluation, and a user rating that is set once.
ALTER TABLE model_feedback RENAME COLUMN task_kind TO task;
ALTER TABLE model_feedback RENAME COLUMN score TO self_evaluation;
ALTER TABLE model_feedback
    DROP COLUMN provider,
    DROP COLUMN latency_ms,
    ADD COLUMN session_id text NOT NULL,
    ADD COLUMN rating smallint CHECK (rating BETWEEN 1 AND 5),
    ADD COLUMN comment text,
    ADD COLUMN rated_at timestamptz,
    ADD CONSTRAINT model_feedback_self_evaluation CHECK (self_evaluation BETWEEN 0 AND 1),
    ADD CONSTRAINT model_feedback_rated CHECK ((rating IS NULL) = (rated_at IS NULL));
CREATE INDEX model_feedback_session_idx
    ON model_feedback (agent_id, session_id, created_at DESC, id DESC);
CREATE INDEX model_feedback_model_idx
    ON model_feedback (agent_id, model, created_at DESC, id DESC);

-- Live candidates: a memory that may duplicate an item, until merged, promoted or rejected.
DROP POLICY live_candidates_own ON live_candidates;
ALTER TABLE live_candidates RENAME COLUMN matched_item_id TO similar_item_id;
ALTER TABLE live_candidates
    DROP COLUMN content_hash,
    DROP COLUMN memory_type,
    DROP CONSTRAINT live_candidates_status_check,
    ADD CONSTRAINT live_candidates_status
        CHECK (status IN ('pending', 'merged', 'promoted', 'rejected')),
    ADD COLUMN resolved_item_id text REFERENCES memory_items (id) ON DELETE SET NULL,
    ADD COLUMN updated_at timestamptz NOT NULL,
    ADD CONSTRAINT live_candidates_similarity CHECK (similarity BETWEEN 0 AND 1),
    -- Only a merged or promoted candidate names an item (which may be deleted later: SET NULL).
    ADD CONSTRAINT live_candidates_resolved
        CHECK (status IN ('merged', 'promoted') OR resolved_item_id IS NULL);
CREATE INDEX live_candidates_status_idx
    ON live_candidates (agent_id, status, created_at DESC, id DESC);
-- Own rows; a referenced item must be visible to the agent (foreign keys ignore RLS).
CREATE POLICY live_candidates_select ON live_candidates FOR SELECT
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));
CREATE POLICY live_candidates_insert ON live_candidates FOR INSERT WITH CHECK (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    AND (similar_item_id IS NULL
         OR EXISTS (SELECT 1 FROM memory_items m WHERE m.id = similar_item_id)));
CREATE POLICY live_candidates_update ON live_candidates FOR UPDATE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''))
    WITH CHECK (
        agent_id = NULLIF(current_setting('app.agent_id', true), '')
        AND (resolved_item_id IS NULL
             OR EXISTS (SELECT 1 FROM memory_items m WHERE m.id = resolved_item_id)));
CREATE POLICY live_candidates_delete ON live_candidates FOR DELETE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));
CREATE TRIGGER live_candidates_keep_owner BEFORE UPDATE ON live_candidates
    FOR EACH ROW EXECUTE FUNCTION agentbus_keep_owner();

-- Merging a candidate reinforces the item it duplicates, which may be another agent's shared
-- (family/public/team) item that the agent can see but not update under RLS. This helper bumps
-- only the reinforcement counters of an item visible to the current agent, by the select
-- policy's rule; false when there is none.
CREATE FUNCTION agentbus_reinforce_visible_item(p_item_id text, p_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_agent text := NULLIF(current_setting('app.agent_id', true), '');
BEGIN
    IF v_agent IS NULL THEN
        RETURN false;
    END IF;
    UPDATE public.memory_items m
    SET reinforcement_count = m.reinforcement_count + 1, last_reinforced_at = p_at,
        updated_at = p_at
    WHERE m.id = p_item_id
      AND (m.agent_id = v_agent OR m.visibility IN ('family', 'public')
           OR (m.visibility = 'team' AND m.team_id = ANY (public.agentbus_my_teams())));
    RETURN FOUND;
END
$$;

-- Keyword search over the agent's own observations, on the GIN index (see 0003 for why this
-- cannot be a plain query under RLS).
CREATE FUNCTION agentbus_search_observations(p_query text, p_limit integer)
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
        ORDER BY score DESC, o.id DESC
        LIMIT p_limit;
END
$$;

REVOKE ALL ON FUNCTION agentbus_reinforce_visible_item(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_search_observations(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentbus_reinforce_visible_item(text, timestamptz) TO agentbus_app;
GRANT EXECUTE ON FUNCTION agentbus_search_observations(text, integer) TO agentbus_app;
