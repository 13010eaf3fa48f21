-- 0005 — knowledge search with the grant check inside the query (issue 6; DESIGN.md §4 "RLS and
-- indexes", "Vector search scoped to an agent").
--
-- Under row-level security the planner will not use the chunks' GIN index (`@@` is not
-- leakproof), so search runs in SECURITY DEFINER functions owned by the owner role (BYPASSRLS,
-- search_path pinned). Each first computes the collections the transaction's agent may read
-- (agentbus_readable_collections, optionally narrowed to the ones asked for) and then ranks only
-- chunks with `collection_id = ANY (permitted)`: the top k are computed over permitted chunks,
-- never filtered after ranking. They return chunk ids and scores; PgAdapter then reads the
-- chunks under RLS, which checks every id a second time. The keyword function plans its query
-- per call (force_custom_plan), for the actual permitted set rather than a generic guess.

CREATE FUNCTION agentbus_search_knowledge_keyword(
    p_query text, p_limit integer, p_collections text[] DEFAULT NULL
) RETURNS TABLE (id text, score real)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_query tsquery := plainto_tsquery('english', coalesce(p_query, ''));
    v_permitted text[];
BEGIN
    -- Every term must match (plainto_tsquery ANDs them); only stop words: nothing matches.
    IF NULLIF(current_setting('app.agent_id', true), '') IS NULL OR numnode(v_query) = 0 THEN
        RETURN;
    END IF;
    v_permitted := public.agentbus_readable_collections(p_collections);
    RETURN QUERY
        SELECT k.id, ts_rank(k.content_tsv, v_query) AS score
        FROM public.knowledge_chunks k
        WHERE k.content_tsv @@ v_query AND k.collection_id = ANY (v_permitted)
        ORDER BY score DESC, k.id
        LIMIT p_limit;
END
$$;

-- The HNSW branch of agentbus_search_knowledge_vector: iterative scans in relaxed order
-- (re-sorted by the caller) over the permitted collections, with a planner that may not swap the
-- index for a sort of every permitted chunk (see agentbus_nearest_hnsw in 0003). SECURITY
-- INVOKER and not executable by the app role: called by its owner only.
CREATE FUNCTION agentbus_nearest_chunks_hnsw(
    p_embedding vector, p_limit integer, p_permitted text[], p_ef_search integer
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
            SELECT k.id, k.embedding <=> p_embedding AS distance
            FROM public.knowledge_chunks k
            WHERE k.collection_id = ANY (p_permitted)
            ORDER BY k.embedding <=> p_embedding
            LIMIT p_limit)
        SELECT relaxed.id, relaxed.distance FROM relaxed;
END
$$;

-- Nearest permitted chunks by cosine distance; p_limit rows whenever p_limit permitted chunks
-- have embeddings. The path is chosen like memory search (0003) by the number of permitted
-- embedded chunks (the sum of the collections' embedded_chunks counters, see 0004): below a bound
-- an exact scan of them (a MATERIALIZED CTE the HNSW index cannot serve); from it the HNSW
-- iterative scan, with the exact scan as fallback when that returns fewer than p_limit rows, so
-- the count only picks the faster path and never decides what is found. p_exact_max NULL:
-- sqrt(20 * p_limit * chunks in the table), at least 1000 — 3,764 for k = 10 over the shared
-- corpus's 70,832 chunks, where exact vs HNSW p50 / p95 measured 2.9 / 3.7 vs 6.7 / 18.7 ms for
-- 1,991 permitted chunks, 3.9 / 4.9 vs 3.7 / 12.7 ms for 2,976 and 6.2 / 11.1 vs 4.2 / 9.6 ms
-- for 4,497 (HNSW's tail is long while few chunks pass the filter).
CREATE FUNCTION agentbus_search_knowledge_vector(
    p_embedding vector, p_limit integer, p_collections text[] DEFAULT NULL,
    p_exact_max integer DEFAULT NULL, p_ef_search integer DEFAULT 100
) RETURNS TABLE (id text, distance double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_permitted text[];
    v_bound integer;
    v_embedded bigint;
    v_ids text[];
    v_distances double precision[];
BEGIN
    IF NULLIF(current_setting('app.agent_id', true), '') IS NULL OR p_embedding IS NULL
       OR p_limit < 1 THEN
        RETURN;
    END IF;
    v_permitted := public.agentbus_readable_collections(p_collections);
    IF cardinality(v_permitted) = 0 THEN
        RETURN;
    END IF;
    v_bound := coalesce(p_exact_max, greatest(1000, ceil(sqrt(
        20.0 * p_limit * greatest((SELECT c.reltuples FROM pg_class c
                                    WHERE c.oid = 'public.knowledge_chunks'::regclass), 1)))));
    SELECT coalesce(sum(c.embedded_chunks), 0) INTO v_embedded
    FROM public.knowledge_collections c WHERE c.id = ANY (v_permitted);

    IF v_embedded >= v_bound THEN
        SELECT array_agg(h.id ORDER BY h.distance, h.id),
               array_agg(h.distance ORDER BY h.distance, h.id)
        INTO v_ids, v_distances
        FROM public.agentbus_nearest_chunks_hnsw(p_embedding, p_limit, v_permitted,
                                                 p_ef_search) AS h;
        IF coalesce(cardinality(v_ids), 0) >= p_limit THEN
            RETURN QUERY SELECT u.id, u.distance FROM unnest(v_ids, v_distances) AS u(id, distance);
            RETURN;
        END IF;
    END IF;

    RETURN QUERY
        WITH permitted AS MATERIALIZED (
            SELECT k.id, k.embedding <=> p_embedding AS distance
            FROM public.knowledge_chunks k
            WHERE k.collection_id = ANY (v_permitted) AND k.embedding IS NOT NULL)
        SELECT permitted.id, permitted.distance FROM permitted
        ORDER BY permitted.distance, permitted.id
        LIMIT p_limit;
END
$$;

REVOKE ALL ON FUNCTION agentbus_search_knowledge_keyword(text, integer, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_nearest_chunks_hnsw(vector, integer, text[], integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_search_knowledge_vector(vector, integer, text[], integer, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentbus_search_knowledge_keyword(text, integer, text[]) TO agentbus_app;
GRANT EXECUTE ON FUNCTION agentbus_search_knowledge_vector(vector, integer, text[], integer, integer)
    TO agentbus_app;
