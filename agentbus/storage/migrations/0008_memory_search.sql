-- 0008 — memory search in one call, with ef_search chosen from the visible fraction.
--
-- Measured on the shared corpus (bench/storage_search.py, 80,235 rows, the largest agent sees
-- 49,489 of them; app role): the hybrid statement of 0003 spent ~1 ms a call outside the
-- index scans — two SECURITY DEFINER functions each looking up the agent's teams
-- (agentbus_my_teams is a SQL function that is not inlined, so it is planned again in every
-- transaction: 0.13 ms a call), the vector function's statements planned again each call (the
-- plan cache kept choosing custom plans: 0.35-0.45 ms), and up to 2 x limit rows read back
-- and decoded when only `limit` are returned. agentbus_search_items does both branches and the
-- fusion in one call and returns the best `limit` ids with their ranks (3.1 instead of 4.2 ms
-- for the largest agent at the same ef_search).

-- The same rule as 0002's SQL function, in PL/pgSQL: its plan is cached by the session instead
-- of being made in every transaction (0.03 instead of 0.12 ms a call, measured as the app role).
CREATE OR REPLACE FUNCTION agentbus_my_teams() RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(m.team_id ORDER BY m.team_id), '{}')
            FROM public.team_members m JOIN public.teams t ON t.id = m.team_id
            WHERE m.agent_id = NULLIF(current_setting('app.agent_id', true), '')
              AND t.status = 'active');
END
$$;

-- The keyword branch for agentbus_search_items, which passes the agent and its teams: every
-- term must match (the caller passes plainto_tsquery), ranked by ts_rank, ties by id in code
-- point order. Planned for each call (force_custom_plan): a generic plan made for a small
-- agent ANDs the GIN bitmap with a bitmap of all the agent's rows — 4-7 ms instead of 1 ms
-- for the largest agent (see 0003). SECURITY INVOKER, not executable by the app role.
CREATE FUNCTION agentbus_items_keyword_hits(
    p_query tsquery, p_limit integer, p_agent text, p_teams text[], p_memory_type text,
    p_visibility text, p_own_only boolean
) RETURNS TABLE (id text, score real)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT m.id, ts_rank(m.summary_tsv, p_query) AS score
        FROM public.memory_items m
        WHERE m.summary_tsv @@ p_query
          AND (m.agent_id = p_agent OR m.visibility IN ('family', 'public')
               OR (m.visibility = 'team' AND m.team_id = ANY (p_teams)))
          AND (p_memory_type IS NULL OR m.memory_type = p_memory_type)
          AND (p_visibility IS NULL OR m.visibility = p_visibility)
          AND (NOT p_own_only OR m.agent_id = p_agent)
        ORDER BY score DESC, m.id COLLATE "C"
        LIMIT p_limit;
END
$$;

-- A lower estimate of the fraction of the embedded rows (the HNSW index) that this search may
-- return, from the planner's statistics (pg_stats, as of the last ANALYZE): the agent's own
-- share, or the family/public share, whichever is larger (team rows are left out), with every
-- row lacking an embedding assumed to be in it. NULL when a filter narrows the search further
-- or there are no statistics: the caller then has only the rows it counted to go by.
CREATE FUNCTION agentbus_items_visible_fraction(
    p_agent text, p_own_only boolean, p_memory_type text, p_visibility text
) RETURNS double precision
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp SET jit = off
AS $$
DECLARE
    v_own double precision;
    v_shared double precision;
    v_null double precision;
BEGIN
    IF p_memory_type IS NOT NULL OR p_visibility IS NOT NULL THEN
        RETURN NULL;
    END IF;
    SELECT max(u.freq) FILTER (WHERE s.attname = 'agent_id' AND u.value = p_agent),
           sum(u.freq) FILTER (WHERE s.attname = 'visibility' AND u.value IN ('family', 'public')),
           max(s.null_frac) FILTER (WHERE s.attname = 'embedding')
    INTO v_own, v_shared, v_null
    FROM pg_stats s
    LEFT JOIN LATERAL unnest(
        CASE WHEN s.attname <> 'embedding' THEN s.most_common_vals::text::text[] END,
        CASE WHEN s.attname <> 'embedding' THEN s.most_common_freqs END) AS u(value, freq) ON true
    WHERE s.schemaname = 'public' AND s.tablename = 'memory_items'
      AND s.attname IN ('agent_id', 'visibility', 'embedding');
    IF v_null IS NULL OR v_null >= 1 THEN
        RETURN NULL;
    END IF;
    RETURN greatest(0, (greatest(coalesce(v_own, 0),
                                 CASE WHEN p_own_only THEN 0 ELSE coalesce(v_shared, 0) END)
                        - v_null) / (1 - v_null));
END
$$;

-- hnsw.ef_search for an HNSW search of p_limit rows that may return a fraction p_fraction of
-- the index: enough candidates that about 2.5 x p_limit of the first ef_search pass the filter,
-- at least 40 (pgvector's default) and p_limit, at most p_ef_max (PgAdapter's hnsw_ef_search,
-- or p_limit if larger) and 1000; p_ef_max when the fraction is unknown. Measured recall@10
-- (HNSW m=16 ef_construction=200, iterative scans, 80,235 rows; a filter keeping a random
-- fraction f, 75 queries — the hard case, since an agent's own rows lie near its queries):
--   f      1.0   0.75  0.62  0.5   0.35  0.25  0.2   0.15  0.1   0.05
--   ef 40  .985  .979  .983  .980  .972  .973  .972  .971  .983  .981
--   ef 100 .996  .997  .996  .996  .991  .985  .979  .973  .987  .984
-- and for the largest agent's own rows (f 0.62, 50 queries): ef 24 .966, 32 .978, 40 .984,
-- 64 .994, 100 .998. Below a fraction of about 0.1 the iterative scan goes on until enough rows
-- pass, whatever ef_search is; above about 0.6, 40 keeps recall above 0.97 in about half the
-- time of 100 (1.4 vs 2.5 ms); between the two, where about k to 2k of the first candidates
-- pass, more candidates help.
CREATE FUNCTION agentbus_hnsw_ef_search(
    p_limit integer, p_fraction double precision, p_ef_max integer
) RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$
    SELECT least(
        CASE WHEN p_fraction IS NULL OR p_fraction <= 0 THEN greatest(p_ef_max, p_limit)
             ELSE greatest(ceil(2.5 * p_limit / least(p_fraction, 1.0))::integer, 40, p_limit)
        END,
        greatest(p_ef_max, p_limit), 1000);
$$;

-- Memory search for the transaction's agent: the keyword list (p_query NULL: none; only stop
-- words: empty), the vector list (p_embedding NULL: none) and their Reciprocal Rank Fusion
-- (k = 60, ties by id in code point order); returns the best p_limit ids with their rank and
-- score in each list. With one list only, the order is that list's. Visibility as in the
-- policies (own rows, family/public, team rows of active teams); the caller reads the rows
-- under RLS, which checks every id again.
--
-- Vector branch (as 0003's agentbus_search_items_vector): p_limit rows whenever that many are
-- visible — the visible embedded rows are counted up to a bound (index-only, one range per
-- arm); below it an exact scan; from it HNSW with iterative scans (agentbus_nearest_hnsw)
-- at agentbus_hnsw_ef_search() of the estimated visible fraction (never below the counted
-- rows / table rows), with the exact scan as fallback when fewer than p_limit come back.
-- p_exact_max NULL: sqrt(5 * p_limit * rows in the table), at least 1000 (see 0003).
--
-- Plans are cached generic ones (force_generic_plan): the keyword function plans its query for
-- each call itself; the count, HNSW and exact statements have one good plan for every agent.
CREATE FUNCTION agentbus_search_items(
    p_query text, p_embedding vector, p_limit integer, p_memory_type text DEFAULT NULL,
    p_visibility text DEFAULT NULL, p_own_only boolean DEFAULT false,
    p_exact_max integer DEFAULT NULL, p_ef_search integer DEFAULT 100
) RETURNS TABLE (id text, keyword_rank integer, keyword_score real, vector_rank integer,
                 distance double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_agent text := NULLIF(current_setting('app.agent_id', true), '');
    v_teams text[];
    v_tsquery tsquery;
    v_keyword_ids text[];
    v_keyword_scores real[];
    v_ids text[];
    v_distances double precision[];
    v_rows double precision;
    v_bound integer;
    v_visible integer := 0;
    v_fraction double precision;
BEGIN
    IF v_agent IS NULL OR p_limit < 1 THEN
        RETURN;
    END IF;
    v_teams := public.agentbus_my_teams();

    IF p_query IS NOT NULL THEN
        v_tsquery := plainto_tsquery('english', p_query);
        IF numnode(v_tsquery) > 0 THEN  -- only stop words: nothing matches
            SELECT array_agg(k.id), array_agg(k.score) INTO v_keyword_ids, v_keyword_scores
            FROM public.agentbus_items_keyword_hits(v_tsquery, p_limit, v_agent, v_teams,
                                                    p_memory_type, p_visibility, p_own_only) AS k;
        END IF;
    END IF;

    IF p_embedding IS NOT NULL THEN
        SELECT c.reltuples INTO v_rows FROM pg_class c
        WHERE c.oid = 'public.memory_items'::regclass;
        v_bound := coalesce(p_exact_max, greatest(1000, ceil(sqrt(
            5.0 * p_limit * greatest(v_rows, 1)))));
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
                WHERE m.team_id = ANY (v_teams) AND m.visibility = 'team'
                  AND m.agent_id <> v_agent AND m.embedding IS NOT NULL
                  AND (p_memory_type IS NULL OR m.memory_type = p_memory_type)
                  AND (p_visibility IS NULL OR m.visibility = p_visibility)
                LIMIT v_bound - v_visible) team);
        END IF;

        IF v_visible >= v_bound THEN
            -- reltuples below the rows just counted: statistics too old to say anything.
            IF v_rows > 0 AND v_rows >= v_visible THEN
                v_fraction := greatest(
                    public.agentbus_items_visible_fraction(v_agent, p_own_only, p_memory_type,
                                                           p_visibility),
                    v_visible / v_rows);
            END IF;
            SELECT array_agg(h.id ORDER BY h.distance, h.id COLLATE "C"),
                   array_agg(h.distance ORDER BY h.distance, h.id COLLATE "C")
            INTO v_ids, v_distances
            FROM public.agentbus_nearest_hnsw(
                p_embedding, p_limit, v_agent, v_teams, p_memory_type, p_visibility, p_own_only,
                public.agentbus_hnsw_ef_search(p_limit, v_fraction, p_ef_search)) AS h;
        END IF;
        IF coalesce(cardinality(v_ids), 0) < p_limit THEN  -- few visible, or HNSW stopped early
            WITH visible AS MATERIALIZED (
                SELECT m.id, m.embedding <=> p_embedding AS distance
                FROM public.memory_items m
                WHERE m.embedding IS NOT NULL
                  AND (m.agent_id = v_agent OR m.visibility IN ('family', 'public')
                       OR (m.visibility = 'team' AND m.team_id = ANY (v_teams)))
                  AND (p_memory_type IS NULL OR m.memory_type = p_memory_type)
                  AND (p_visibility IS NULL OR m.visibility = p_visibility)
                  AND (NOT p_own_only OR m.agent_id = v_agent)
            ), best AS (
                SELECT visible.id, visible.distance FROM visible
                ORDER BY visible.distance, visible.id COLLATE "C"
                LIMIT p_limit)
            SELECT array_agg(best.id ORDER BY best.distance, best.id COLLATE "C"),
                   array_agg(best.distance ORDER BY best.distance, best.id COLLATE "C")
            INTO v_ids, v_distances
            FROM best;
        END IF;
    END IF;

    RETURN QUERY
        SELECT coalesce(kw.id, vec.id), kw.rank::integer, kw.score, vec.rank::integer,
               vec.distance
        FROM unnest(v_keyword_ids, v_keyword_scores) WITH ORDINALITY AS kw(id, score, rank)
        FULL JOIN unnest(v_ids, v_distances) WITH ORDINALITY AS vec(id, distance, rank)
            ON vec.id = kw.id
        ORDER BY coalesce(1::double precision / (60 + kw.rank), 0)
                 + coalesce(1::double precision / (60 + vec.rank), 0) DESC,
                 coalesce(kw.id, vec.id) COLLATE "C"
        LIMIT p_limit;
END
$$;

-- 0003's two search functions are replaced by agentbus_search_items.
DROP FUNCTION agentbus_search_items_keyword(text, integer, text, text, boolean);
DROP FUNCTION agentbus_search_items_vector(vector, integer, text, text, boolean, integer, integer);

REVOKE ALL ON FUNCTION agentbus_items_keyword_hits(tsquery, integer, text, text[], text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_items_visible_fraction(text, boolean, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_hnsw_ef_search(integer, double precision, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_search_items(text, vector, integer, text, text, boolean, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentbus_search_items(text, vector, integer, text, text, boolean, integer, integer) TO agentbus_app;
