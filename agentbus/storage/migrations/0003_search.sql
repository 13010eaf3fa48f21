-- 0003 — search functions (DESIGN.md §4 "RLS and indexes", "Vector search scoped to an agent").
--
-- `@@` and jsonb `@>` are not leakproof, so under RLS PostgreSQL evaluates the policy before them
-- and will not use their GIN indexes (measured: 85 ms seq scan vs 2.8 ms). Search therefore runs
-- in SECURITY DEFINER functions owned by the owner role (BYPASSRLS, search_path pinned) that
-- apply the transaction's agent id themselves, with the same visibility rule as the policies:
-- own rows, family/public rows, team rows of the agent's active teams. They return ids and scores
-- only; PgAdapter then reads the rows under RLS, which checks every id a second time.
--
-- The keyword functions plan their query for each call (plan_cache_mode force_custom_plan):
-- PL/pgSQL caches a generic plan after five calls, and one made for a small agent ANDs the
-- GIN bitmap with a bitmap of all the agent's rows — 4-7 ms instead of 1 ms for an agent with
-- 49,539 rows (bench/storage_search.py). The vector functions keep cached plans: theirs do not
-- depend on the agent's size, and planning each call cost 0.3-0.5 ms there.

CREATE FUNCTION agentbus_search_items_keyword(
    p_query text, p_limit integer, p_memory_type text DEFAULT NULL,
    p_visibility text DEFAULT NULL, p_own_only boolean DEFAULT false
) RETURNS TABLE (id text, score real)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_agent text := NULLIF(current_setting('app.agent_id', true), '');
    v_teams text[];
    v_query tsquery := plainto_tsquery('english', coalesce(p_query, ''));
BEGIN
    -- Every term must match (plainto_tsquery ANDs them); only stop words: nothing matches.
    IF v_agent IS NULL OR numnode(v_query) = 0 THEN
        RETURN;
    END IF;
    v_teams := public.agentbus_my_teams();
    RETURN QUERY
        SELECT m.id, ts_rank(m.summary_tsv, v_query) AS score
        FROM public.memory_items m
        WHERE m.summary_tsv @@ v_query
          AND (m.agent_id = v_agent OR m.visibility IN ('family', 'public')
               OR (m.visibility = 'team' AND m.team_id = ANY (v_teams)))
          AND (p_memory_type IS NULL OR m.memory_type = p_memory_type)
          AND (p_visibility IS NULL OR m.visibility = p_visibility)
          AND (NOT p_own_only OR m.agent_id = v_agent)
        ORDER BY score DESC, m.id
        LIMIT p_limit;
END
$$;

-- The HNSW branch of agentbus_search_items_vector (below), which passes the agent and its teams.
-- Its SET clauses hold for this call only (restored when it returns, like SET LOCAL scoped to
-- the call): iterative scans in relaxed order (re-sorted here), and a planner that may not
-- replace the index with a sort of every visible row — pgvector's cost model prefers that for
-- large visible sets and a higher ef_search (measured: 80 ms instead of 5 ms for 49,534 rows).
-- SECURITY INVOKER and not executable by the app role: called by its owner only.
CREATE FUNCTION agentbus_nearest_hnsw(
    p_embedding vector, p_limit integer, p_agent text, p_teams text[], p_memory_type text,
    p_visibility text, p_own_only boolean, p_ef_search integer
) RETURNS TABLE (id text, distance double precision)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp SET jit = off
SET hnsw.iterative_scan = 'relaxed_order' SET hnsw.ef_search = 40
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('hnsw.ef_search', least(greatest(p_ef_search, p_limit), 1000)::text, true);
    RETURN QUERY
        WITH relaxed AS MATERIALIZED (
            SELECT m.id, m.embedding <=> p_embedding AS distance
            FROM public.memory_items m
            WHERE (m.agent_id = p_agent OR m.visibility IN ('family', 'public')
                   OR (m.visibility = 'team' AND m.team_id = ANY (p_teams)))
              AND (p_memory_type IS NULL OR m.memory_type = p_memory_type)
              AND (p_visibility IS NULL OR m.visibility = p_visibility)
              AND (NOT p_own_only OR m.agent_id = p_agent)
            ORDER BY m.embedding <=> p_embedding
            LIMIT p_limit)
        SELECT relaxed.id, relaxed.distance FROM relaxed;
END
$$;

-- Nearest visible items by cosine distance; returns p_limit rows whenever p_limit are visible.
--
-- Through a shared HNSW index an agent filter keeps only the neighbours that pass it (0.4 of 10
-- at 1 % selectivity, measured), so the path is chosen by the number of visible embedded rows,
-- counted up to a bound with one index range per arm of the visibility rule (each stops there):
-- * fewer than the bound: exact scan of the visible rows (a MATERIALIZED CTE, which the HNSW
--   index cannot serve), cost proportional to the bound;
-- * otherwise: HNSW with iterative scans (agentbus_nearest_hnsw), re-sorted; if the scan stops
--   early (hnsw.max_scan_tuples) with fewer than p_limit rows, the exact scan.
-- p_exact_max NULL: sqrt(5 * p_limit * rows in the table), at least 1000 — about where an exact
-- scan of that many rows starts to cost more than an iterative HNSW scan at that selectivity
-- (measured on the 84,735-row corpus, k = 10: exact 1.7 ms vs HNSW 1.9 ms at 1,009 rows,
-- 3.4 vs 3.7 ms at 2,020, 130 vs 2.3 ms at 49,534; HNSW for 50 rows: 54 ms).
-- p_ef_search 100: recall@10 0.985 at 4.4 ms for the 49,519-row agent (64: 0.965 at 2.9 ms,
-- 40: 0.955 at 2.4 ms; 20 held-out queries). Recall is lowest where the filter keeps most rows:
-- at 2.4 % selectivity the iterative scan goes on long enough for 0.995 even at 40.
CREATE FUNCTION agentbus_search_items_vector(
    p_embedding vector, p_limit integer, p_memory_type text DEFAULT NULL,
    p_visibility text DEFAULT NULL, p_own_only boolean DEFAULT false,
    p_exact_max integer DEFAULT NULL, p_ef_search integer DEFAULT 100
) RETURNS TABLE (id text, distance double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_agent text := NULLIF(current_setting('app.agent_id', true), '');
    v_teams text[];
    v_bound integer;
    v_visible integer := 0;
    v_ids text[];
    v_distances double precision[];
BEGIN
    IF v_agent IS NULL OR p_embedding IS NULL OR p_limit < 1 THEN
        RETURN;
    END IF;
    v_teams := public.agentbus_my_teams();
    v_bound := coalesce(p_exact_max, greatest(1000, ceil(sqrt(
        5.0 * p_limit * greatest((SELECT c.reltuples FROM pg_class c
                                   WHERE c.oid = 'public.memory_items'::regclass), 1)))));

    SELECT count(*) INTO v_visible FROM (
        SELECT 1 FROM public.memory_items m
        WHERE m.agent_id = v_agent AND m.embedding IS NOT NULL
          AND (p_memory_type IS NULL OR m.memory_type = p_memory_type)
          AND (p_visibility IS NULL OR m.visibility = p_visibility)
        LIMIT v_bound) own;
    IF v_visible < v_bound AND NOT p_own_only THEN
        v_visible := v_visible + (SELECT count(*) FROM (
            SELECT 1 FROM public.memory_items m
            WHERE m.visibility IN ('family', 'public') AND m.agent_id <> v_agent
              AND m.embedding IS NOT NULL
              AND (p_memory_type IS NULL OR m.memory_type = p_memory_type)
              AND (p_visibility IS NULL OR m.visibility = p_visibility)
            LIMIT v_bound - v_visible) shared);
    END IF;
    IF v_visible < v_bound AND NOT p_own_only AND cardinality(v_teams) > 0 THEN
        v_visible := v_visible + (SELECT count(*) FROM (
            SELECT 1 FROM public.memory_items m
            WHERE m.team_id = ANY (v_teams) AND m.visibility = 'team' AND m.agent_id <> v_agent
              AND m.embedding IS NOT NULL
              AND (p_memory_type IS NULL OR m.memory_type = p_memory_type)
              AND (p_visibility IS NULL OR m.visibility = p_visibility)
            LIMIT v_bound - v_visible) team);
    END IF;

    IF v_visible >= v_bound THEN
        SELECT array_agg(h.id ORDER BY h.distance, h.id),
               array_agg(h.distance ORDER BY h.distance, h.id)
        INTO v_ids, v_distances
        FROM public.agentbus_nearest_hnsw(p_embedding, p_limit, v_agent, v_teams, p_memory_type,
                                          p_visibility, p_own_only, p_ef_search) AS h;
        IF coalesce(cardinality(v_ids), 0) >= p_limit THEN
            RETURN QUERY SELECT u.id, u.distance FROM unnest(v_ids, v_distances) AS u(id, distance);
            RETURN;
        END IF;
    END IF;

    RETURN QUERY
        WITH visible AS MATERIALIZED (
            SELECT m.id, m.embedding <=> p_embedding AS distance
            FROM public.memory_items m
            WHERE m.embedding IS NOT NULL
              AND (m.agent_id = v_agent OR m.visibility IN ('family', 'public')
                   OR (m.visibility = 'team' AND m.team_id = ANY (v_teams)))
              AND (p_memory_type IS NULL OR m.memory_type = p_memory_type)
              AND (p_visibility IS NULL OR m.visibility = p_visibility)
              AND (NOT p_own_only OR m.agent_id = v_agent))
        SELECT visible.id, visible.distance FROM visible
        ORDER BY visible.distance, visible.id
        LIMIT p_limit;
END
$$;

CREATE FUNCTION agentbus_search_tasks(p_query text, p_limit integer)
RETURNS TABLE (id text, score real)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_agent text := NULLIF(current_setting('app.agent_id', true), '');
    v_teams text[];
    v_query tsquery := plainto_tsquery('english', coalesce(p_query, ''));
BEGIN
    IF v_agent IS NULL OR numnode(v_query) = 0 THEN
        RETURN;
    END IF;
    v_teams := public.agentbus_my_teams();
    RETURN QUERY
        SELECT t.id, ts_rank(t.search_tsv, v_query) AS score
        FROM public.tasks t
        WHERE t.search_tsv @@ v_query
          AND (t.agent_id = v_agent OR t.visibility IN ('family', 'public')
               OR (t.visibility = 'team' AND t.team_id = ANY (v_teams)))
        ORDER BY score DESC, t.id
        LIMIT p_limit;
END
$$;

REVOKE ALL ON FUNCTION agentbus_search_items_keyword(text, integer, text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_search_items_vector(vector, integer, text, text, boolean, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_search_tasks(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_nearest_hnsw(vector, integer, text, text[], text, text, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentbus_search_items_keyword(text, integer, text, text, boolean) TO agentbus_app;
GRANT EXECUTE ON FUNCTION agentbus_search_items_vector(vector, integer, text, text, boolean, integer, integer) TO agentbus_app;
GRANT EXECUTE ON FUNCTION agentbus_search_tasks(text, integer) TO agentbus_app;
