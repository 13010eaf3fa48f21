-- 0010 — knowledge search in one call that returns the hits' rows (issue 6 benchmark).
--
-- Measured on the shared corpus (bench/knowledge.py: 70,832 chunks, a reader granted 10
-- collections holding 2,001 of them; app role): 0005's vector search cost the app ~0.5 ms a call
-- more than the same search run by the owner role (2.6 vs 2.1 ms), of which
-- * ~0.2 ms: PgAdapter read the hits' chunks and documents back under RLS, whose policies compute
--   agentbus_readable_collections() again for each table (an InitPlan each), after the search
--   function had computed it already (a hybrid search computed it once per branch, too);
-- * ~0.25 ms: the per-call transaction's three extra round trips (BEGIN, set_config, COMMIT);
-- * ~0.1 ms: the exact path's statement was planned again on every call for this reader (the
--   plan cache kept custom plans, as for memory search before 0008).
-- agentbus_search_knowledge computes the readable collections once, runs both branches, fuses
-- them and returns the best p_limit chunks with their text and document title, read by primary
-- key among the permitted collections only: the grant check stays inside the query that computes
-- the top k (never a filter after ranking), and the rows come back without a second read, in the
-- one statement that also sets the agent id (below).

-- The keyword branch: every term must match (the caller passes plainto_tsquery), ranked by
-- ts_rank, ties by id in code point order, among p_permitted only. Planned for each call
-- (force_custom_plan), for the actual permitted set: a generic plan made for a reader with few
-- chunks may AND the GIN bitmap with a bitmap of every permitted chunk (see 0003, 0008).
-- SECURITY INVOKER and not executable by the app role: called by agentbus_search_knowledge only.
CREATE FUNCTION agentbus_knowledge_keyword_hits(
    p_query tsquery, p_limit integer, p_permitted text[]
) RETURNS TABLE (id text, score real)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT k.id, ts_rank(k.content_tsv, p_query) AS score
        FROM public.knowledge_chunks k
        WHERE k.content_tsv @@ p_query AND k.collection_id = ANY (p_permitted)
        ORDER BY score DESC, k.id COLLATE "C"
        LIMIT p_limit;
END
$$;

-- Knowledge search for the transaction's agent over the collections it may read (own, granted,
-- the family/public library; narrowed to p_collections when given): the keyword list (p_query
-- NULL: none; only stop words: empty), the vector list (p_embedding NULL: none) and their
-- Reciprocal Rank Fusion (k = 60, ties by id in code point order). Returns the best p_limit
-- chunks in that order with their rank and score in each list, chunk text and document title;
-- with one list only, the order is that list's.
--
-- p_agent must name the transaction's agent (app.agent_id), or there are no rows; so must an
-- agent id be set at all. PgAdapter passes set_config('app.agent_id', agent, true) as p_agent:
-- a function's arguments are evaluated before its body runs, so the setting is in place before
-- anything reads it, and it lasts until the statement's own (implicit) transaction ends: one
-- round trip instead of four (BEGIN, set_config, search, COMMIT).
--
-- Vector branch as 0005's agentbus_search_knowledge_vector: p_limit rows whenever that many
-- permitted chunks have embeddings — below a bound on the permitted embedded chunks (the
-- collections' embedded_chunks counters) an exact scan of them; from it the HNSW iterative scan
-- (agentbus_nearest_chunks_hnsw, at p_ef_search), with the exact scan as fallback when that
-- returns fewer than p_limit. p_exact_max NULL: sqrt(20 * p_limit * chunks in the table), at
-- least 1000 (0005 has the measurements).
--
-- Plans are cached generic ones (force_generic_plan), so no statement is planned again per call:
-- the keyword function plans its own query for each call; the exact scan, the HNSW scan and the
-- primary-key reads have one good plan for every reader.
CREATE FUNCTION agentbus_search_knowledge(
    p_agent text, p_query text, p_embedding vector, p_limit integer,
    p_collections text[] DEFAULT NULL, p_exact_max integer DEFAULT NULL,
    p_ef_search integer DEFAULT 100
) RETURNS TABLE (id text, document_id text, collection_id text, chunk_index integer,
                 content text, title text, keyword_rank integer, keyword_score real,
                 vector_rank integer, distance double precision)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_permitted text[];
    v_tsquery tsquery;
    v_keyword_ids text[];
    v_keyword_scores real[];
    v_ids text[];
    v_distances double precision[];
    v_bound integer;
    v_embedded bigint;
BEGIN
    IF p_agent IS DISTINCT FROM NULLIF(current_setting('app.agent_id', true), '')
       OR p_agent IS NULL OR p_limit < 1 THEN
        RETURN;
    END IF;
    v_permitted := public.agentbus_readable_collections(p_collections);
    IF cardinality(v_permitted) = 0 THEN
        RETURN;
    END IF;

    IF p_query IS NOT NULL THEN
        v_tsquery := plainto_tsquery('english', p_query);
        IF numnode(v_tsquery) > 0 THEN  -- only stop words: nothing matches
            SELECT array_agg(k.id), array_agg(k.score) INTO v_keyword_ids, v_keyword_scores
            FROM public.agentbus_knowledge_keyword_hits(v_tsquery, p_limit, v_permitted) AS k;
        END IF;
    END IF;

    IF p_embedding IS NOT NULL THEN
        v_bound := coalesce(p_exact_max, greatest(1000, ceil(sqrt(
            20.0 * p_limit * greatest((SELECT c.reltuples FROM pg_class c
                                        WHERE c.oid = 'public.knowledge_chunks'::regclass),
                                       1)))));
        SELECT coalesce(sum(c.embedded_chunks), 0) INTO v_embedded
        FROM public.knowledge_collections c WHERE c.id = ANY (v_permitted);
        IF v_embedded >= v_bound THEN
            SELECT array_agg(h.id ORDER BY h.distance, h.id COLLATE "C"),
                   array_agg(h.distance ORDER BY h.distance, h.id COLLATE "C")
            INTO v_ids, v_distances
            FROM public.agentbus_nearest_chunks_hnsw(p_embedding, p_limit, v_permitted,
                                                     p_ef_search) AS h;
        END IF;
        IF coalesce(cardinality(v_ids), 0) < p_limit THEN  -- few permitted, or HNSW stopped early
            WITH permitted AS MATERIALIZED (
                SELECT k.id, k.embedding <=> p_embedding AS distance
                FROM public.knowledge_chunks k
                WHERE k.collection_id = ANY (v_permitted) AND k.embedding IS NOT NULL
            ), best AS (
                SELECT permitted.id, permitted.distance FROM permitted
                ORDER BY permitted.distance, permitted.id COLLATE "C"
                LIMIT p_limit)
            SELECT array_agg(best.id ORDER BY best.distance, best.id COLLATE "C"),
                   array_agg(best.distance ORDER BY best.distance, best.id COLLATE "C")
            INTO v_ids, v_distances
            FROM best;
        END IF;
    END IF;

    -- The chunks are read by primary key, and only from the permitted collections again.
    RETURN QUERY
        WITH fused AS (
            SELECT coalesce(kw.id, vec.id) AS id, kw.rank::integer AS keyword_rank, kw.score,
                   vec.rank::integer AS vector_rank, vec.distance,
                   coalesce(1::double precision / (60 + kw.rank), 0)
                   + coalesce(1::double precision / (60 + vec.rank), 0) AS rrf
            FROM unnest(v_keyword_ids, v_keyword_scores) WITH ORDINALITY AS kw(id, score, rank)
            FULL JOIN unnest(v_ids, v_distances) WITH ORDINALITY AS vec(id, distance, rank)
                ON vec.id = kw.id
            ORDER BY rrf DESC, coalesce(kw.id, vec.id) COLLATE "C"
            LIMIT p_limit)
        SELECT fused.id, ch.document_id, ch.collection_id, ch.chunk_index, ch.content, kd.title,
               fused.keyword_rank, fused.score, fused.vector_rank, fused.distance
        FROM fused
        JOIN public.knowledge_chunks ch
            ON ch.id = fused.id AND ch.collection_id = ANY (v_permitted)
        JOIN public.knowledge_documents kd ON kd.id = ch.document_id
        ORDER BY fused.rrf DESC, fused.id COLLATE "C";
END
$$;

-- 0005's two search functions are replaced by agentbus_search_knowledge (which still calls
-- 0005's agentbus_nearest_chunks_hnsw).
DROP FUNCTION agentbus_search_knowledge_keyword(text, integer, text[]);
DROP FUNCTION agentbus_search_knowledge_vector(vector, integer, text[], integer, integer);

REVOKE ALL ON FUNCTION agentbus_knowledge_keyword_hits(tsquery, integer, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentbus_search_knowledge(text, text, vector, integer, text[], integer, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentbus_search_knowledge(text, text, vector, integer, text[], integer, integer)
    TO agentbus_app;
