-- 0011 — memory search in one statement that returns the hits' rows (issue 5 benchmark).
--
-- 0008's agentbus_search_items returns ids; PgAdapter read the rows back under RLS (a LATERAL
-- primary-key lookup per hit, each checked by the policies, which look the agent's teams up
-- again) inside a transaction of its own: BEGIN, set_config, search, COMMIT — four round trips.
-- As 0010 did for knowledge search, agentbus_search_item_rows takes the agent id as its first
-- argument, which PgAdapter passes as set_config('app.agent_id', agent, true): the arguments
-- are evaluated before the body runs, so the setting is in place before anything reads it, and
-- it lasts until the statement's own (implicit) transaction ends. The rows are read by primary
-- key in the same call, bypassing the policies (the function's owner is BYPASSRLS) but checked
-- by the same visibility rule: own rows, family/public, team rows of the agent's active teams.

-- p_agent must name the transaction's agent (app.agent_id), or there are no rows; so must an
-- agent id be set at all (agentbus_search_items returns nothing without one). The other
-- arguments are agentbus_search_items's (0008). Returns each hit's whole memory_items row
-- (PgAdapter selects the columns it decodes: (hit.item).*) with its rank and score in each list,
-- in agentbus_search_items's order.
CREATE FUNCTION agentbus_search_item_rows(
    p_agent text, p_query text, p_embedding vector, p_limit integer,
    p_memory_type text DEFAULT NULL, p_visibility text DEFAULT NULL,
    p_own_only boolean DEFAULT false, p_exact_max integer DEFAULT NULL,
    p_ef_search integer DEFAULT 100
) RETURNS TABLE (item public.memory_items, keyword_rank integer, keyword_score real,
                 vector_rank integer, distance double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    IF p_agent IS NULL OR p_agent IS DISTINCT FROM NULLIF(current_setting('app.agent_id', true), '')
    THEN
        RETURN;
    END IF;
    -- One primary-key lookup per hit (LATERAL … OFFSET 0: a generic plan of a join would
    -- expect the function's default 1,000 rows and may hash a scan of the table instead). The
    -- visibility rule is checked once more because the search's statements and this one see
    -- different snapshots: a row made private in between is not returned. The agent's teams
    -- are an InitPlan, computed only when a team row gets that far, and then once (the search
    -- itself has looked them up already).
    RETURN QUERY
        SELECT found.m, hit.keyword_rank, hit.keyword_score, hit.vector_rank, hit.distance
        FROM public.agentbus_search_items(p_query, p_embedding, p_limit, p_memory_type,
                                          p_visibility, p_own_only, p_exact_max, p_ef_search)
            WITH ORDINALITY AS hit
        CROSS JOIN LATERAL (
            SELECT m FROM public.memory_items m
            WHERE m.id = hit.id
              AND (m.agent_id = p_agent OR m.visibility IN ('family', 'public')
                   OR (m.visibility = 'team'
                       AND m.team_id = ANY ((SELECT public.agentbus_my_teams())::text[])))
            OFFSET 0) AS found
        ORDER BY hit.ordinality;
END
$$;

REVOKE ALL ON FUNCTION agentbus_search_item_rows(text, text, vector, integer, text, text, boolean, integer, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentbus_search_item_rows(text, text, vector, integer, text, text, boolean, integer, integer)
    TO agentbus_app;
