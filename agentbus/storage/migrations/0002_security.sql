-- 0002 — row-level security that holds (DESIGN.md §4 "RLS that holds").
--
-- The app role (agentbus_app) is neither owner, superuser nor BYPASSRLS, and every agent-scoped
-- table has ENABLE + FORCE ROW LEVEL SECURITY. Every transaction of PgAdapter starts with
-- `SELECT set_config('app.agent_id', $1, true)` (transaction-local, so a pooled connection never
-- carries one agent's id into another's transaction); policies read
-- NULLIF(current_setting('app.agent_id', true), ''), so an unset id sees nothing.
--
-- Visible = own rows, `family`/`public` rows, `team` rows of active teams the agent is a member
-- of. Writes: own rows only (tasks: also their assignee). Foreign-key checks ignore RLS, so every
-- insert that references another row checks in its WITH CHECK that the row is visible: an
-- invisible id fails exactly like a missing one.
--
-- Helpers that must see past RLS (team membership, task-status bookkeeping across agents) are
-- SECURITY DEFINER functions owned by the owner role with a pinned search_path; they apply the
-- transaction's agent id themselves and return nothing that the caller could not see.

-- Team membership ------------------------------------------------------------------------------

-- Active teams the current agent belongs to (a disbanded team grants no visibility).
CREATE FUNCTION agentbus_my_teams() RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce(array_agg(m.team_id ORDER BY m.team_id), '{}')
    FROM public.team_members m JOIN public.teams t ON t.id = m.team_id
    WHERE m.agent_id = NULLIF(current_setting('app.agent_id', true), '')
      AND t.status = 'active'
$$;

CREATE FUNCTION agentbus_is_team_member(p_team_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.team_members m JOIN public.teams t ON t.id = m.team_id
        WHERE m.team_id = p_team_id
          AND m.agent_id = NULLIF(current_setting('app.agent_id', true), '')
          AND t.status = 'active')
$$;

-- Member of the team in any status (members of a disbanded team still see its record).
CREATE FUNCTION agentbus_in_team(p_team_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.team_members m
        WHERE m.team_id = p_team_id
          AND m.agent_id = NULLIF(current_setting('app.agent_id', true), ''))
$$;

-- Creator or lead: may change the team and its members.
CREATE FUNCTION agentbus_manages_team(p_team_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.teams t
        WHERE t.id = p_team_id
          AND NULLIF(current_setting('app.agent_id', true), '') IN (t.agent_id, t.lead))
$$;

-- Owners are immutable: an assignee (tasks) or lead (teams) may update the row, not take it.
CREATE FUNCTION agentbus_keep_owner() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.agent_id IS DISTINCT FROM OLD.agent_id THEN
        RAISE EXCEPTION 'the id and agent_id of a % row cannot change', TG_TABLE_NAME
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tasks_keep_owner BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION agentbus_keep_owner();
CREATE TRIGGER teams_keep_owner BEFORE UPDATE ON teams
    FOR EACH ROW EXECUTE FUNCTION agentbus_keep_owner();

-- Task dependencies: a DAG, and statuses that follow it --------------------------------------

-- Rejects an edge that would close a cycle (SQLSTATE ZA001, DependencyCycleError). The walk must
-- see every agent's edges, hence SECURITY DEFINER; the advisory lock serialises writers of the
-- graph, else two transactions adding a->b and b->a would each find no cycle.
CREATE FUNCTION agentbus_check_dependency_cycle() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7305950283400911617);  -- 'agentbus.task_dependencies'
    IF NEW.task_id = NEW.depends_on OR EXISTS (
        WITH RECURSIVE reach(id) AS (
            SELECT NEW.depends_on
            UNION
            SELECT d.depends_on FROM public.task_dependencies d JOIN reach r ON d.task_id = r.id
        )
        SELECT 1 FROM reach WHERE reach.id = NEW.task_id
    ) THEN
        RAISE EXCEPTION 'task % cannot depend on task %: that would close a dependency cycle',
            NEW.task_id, NEW.depends_on USING ERRCODE = 'ZA001';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER task_dependencies_no_cycle BEFORE INSERT ON task_dependencies
    FOR EACH ROW EXECUTE FUNCTION agentbus_check_dependency_cycle();

-- A pending/blocked task is blocked exactly while one of its dependencies is open. Dependents
-- may belong to other agents, so this runs as the owner; its history line names the agent whose
-- write caused it.
CREATE FUNCTION agentbus_refresh_task_status(p_task_id text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_old text;
    v_new text;
    v_at timestamptz := clock_timestamp();
BEGIN
    SELECT t.status INTO v_old FROM public.tasks t WHERE t.id = p_task_id FOR NO KEY UPDATE;
    IF v_old IS NULL OR v_old NOT IN ('pending', 'blocked') THEN
        RETURN;
    END IF;
    v_new := CASE WHEN EXISTS (
        SELECT 1 FROM public.task_dependencies d JOIN public.tasks o ON o.id = d.depends_on
        WHERE d.task_id = p_task_id AND o.status IN ('pending', 'blocked', 'in_progress')
    ) THEN 'blocked' ELSE 'pending' END;
    IF v_new <> v_old THEN
        UPDATE public.tasks SET status = v_new, updated_at = v_at WHERE id = p_task_id;
        INSERT INTO public.task_events (task_id, at, kind, by_agent, detail)
        VALUES (p_task_id, v_at, 'status',
                coalesce(NULLIF(current_setting('app.agent_id', true), ''), 'agentbus'),
                jsonb_build_object('from', v_old, 'to', v_new, 'reason', 'dependencies'));
    END IF;
END
$$;

CREATE FUNCTION agentbus_dependency_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM public.agentbus_refresh_task_status(OLD.task_id);
    ELSE
        PERFORM public.agentbus_refresh_task_status(NEW.task_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER task_dependencies_changed AFTER INSERT OR DELETE ON task_dependencies
    FOR EACH ROW EXECUTE FUNCTION agentbus_dependency_changed();

-- A task that closes (or reopens) unblocks (or blocks) its dependents.
CREATE FUNCTION agentbus_task_status_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_dependent text;
BEGIN
    FOR v_dependent IN
        SELECT d.task_id FROM public.task_dependencies d WHERE d.depends_on = NEW.id ORDER BY d.seq
    LOOP
        PERFORM public.agentbus_refresh_task_status(v_dependent);
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_status_changed AFTER UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN ((OLD.status IN ('pending', 'blocked', 'in_progress'))
          IS DISTINCT FROM (NEW.status IN ('pending', 'blocked', 'in_progress')))
    EXECUTE FUNCTION agentbus_task_status_changed();

-- Whether a task has an open dependency, counting ones the caller cannot see (a task blocked by
-- a private task of another agent is still blocked). Answers only for a task the caller can
-- see (false otherwise), by the select policy's rule.
CREATE FUNCTION agentbus_has_open_dependency(p_task_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.tasks t
        WHERE t.id = p_task_id
          AND (t.agent_id = NULLIF(current_setting('app.agent_id', true), '')
               OR (t.visibility IN ('family', 'public')
                   AND NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL)
               OR (t.visibility = 'team' AND t.team_id = ANY (public.agentbus_my_teams()))))
    AND EXISTS (
        SELECT 1 FROM public.task_dependencies d JOIN public.tasks o ON o.id = d.depends_on
        WHERE d.task_id = p_task_id AND o.status IN ('pending', 'blocked', 'in_progress'))
$$;

-- Policies -------------------------------------------------------------------------------------

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'teams', 'team_members', 'resources', 'memory_items', 'categories', 'item_categories',
        'entities', 'item_entities', 'reflections', 'lessons', 'knowledge_collections',
        'knowledge_collection_grants', 'knowledge_documents', 'knowledge_chunks', 'tasks',
        'task_dependencies', 'task_events', 'fences', 'service_keys', 'observations',
        'model_feedback', 'live_candidates']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    END LOOP;
    -- Rows only their agent sees and writes.
    FOREACH t IN ARRAY ARRAY[
        'resources', 'categories', 'entities', 'reflections', 'lessons', 'fences',
        'service_keys', 'observations', 'model_feedback']
    LOOP
        EXECUTE format($p$
            CREATE POLICY %1$I ON %2$I
            USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''))
            WITH CHECK (agent_id = NULLIF(current_setting('app.agent_id', true), ''))
        $p$, t || '_own', t);
    END LOOP;
END
$$;

-- Shared rows: own, family/public, or team rows of the agent's active teams.
CREATE POLICY memory_items_select ON memory_items FOR SELECT USING (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    OR (visibility IN ('family', 'public')
        AND NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL)
    OR (visibility = 'team' AND team_id = ANY ((SELECT agentbus_my_teams())::text[])));
CREATE POLICY memory_items_insert ON memory_items FOR INSERT WITH CHECK (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    AND (team_id IS NULL OR agentbus_is_team_member(team_id))
    AND (resource_id IS NULL OR EXISTS (SELECT 1 FROM resources r WHERE r.id = resource_id)));
CREATE POLICY memory_items_update ON memory_items FOR UPDATE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''))
    WITH CHECK (
        agent_id = NULLIF(current_setting('app.agent_id', true), '')
        AND (resource_id IS NULL OR EXISTS (SELECT 1 FROM resources r WHERE r.id = resource_id)));
CREATE POLICY memory_items_delete ON memory_items FOR DELETE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));

-- Links belong to the agent that made them; both ends must be visible to it.
CREATE POLICY item_categories_select ON item_categories FOR SELECT
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));
CREATE POLICY item_categories_insert ON item_categories FOR INSERT WITH CHECK (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    AND EXISTS (SELECT 1 FROM memory_items m WHERE m.id = item_id)
    AND EXISTS (SELECT 1 FROM categories c WHERE c.id = category_id));
CREATE POLICY item_categories_delete ON item_categories FOR DELETE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));

CREATE POLICY item_entities_select ON item_entities FOR SELECT
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));
CREATE POLICY item_entities_insert ON item_entities FOR INSERT WITH CHECK (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    AND EXISTS (SELECT 1 FROM memory_items m WHERE m.id = item_id)
    AND EXISTS (SELECT 1 FROM entities e WHERE e.id = entity_id));
CREATE POLICY item_entities_delete ON item_entities FOR DELETE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));

CREATE POLICY live_candidates_own ON live_candidates
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''))
    WITH CHECK (
        agent_id = NULLIF(current_setting('app.agent_id', true), '')
        AND (matched_item_id IS NULL
             OR EXISTS (SELECT 1 FROM memory_items m WHERE m.id = matched_item_id)));

-- Teams: seen by their creator and members; changed by their creator or lead.
CREATE POLICY teams_select ON teams FOR SELECT USING (
    agent_id = NULLIF(current_setting('app.agent_id', true), '') OR agentbus_in_team(id));
CREATE POLICY teams_insert ON teams FOR INSERT
    WITH CHECK (agent_id = NULLIF(current_setting('app.agent_id', true), ''));
CREATE POLICY teams_update ON teams FOR UPDATE
    USING (NULLIF(current_setting('app.agent_id', true), '') IN (agent_id, lead))
    WITH CHECK (NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL);
CREATE POLICY teams_delete ON teams FOR DELETE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));

CREATE POLICY team_members_select ON team_members FOR SELECT
    USING (agentbus_in_team(team_id) OR agentbus_manages_team(team_id));
CREATE POLICY team_members_insert ON team_members FOR INSERT
    WITH CHECK (agentbus_manages_team(team_id));
CREATE POLICY team_members_update ON team_members FOR UPDATE
    USING (agentbus_manages_team(team_id)) WITH CHECK (agentbus_manages_team(team_id));
CREATE POLICY team_members_delete ON team_members FOR DELETE USING (
    agentbus_manages_team(team_id)
    OR agent_id = NULLIF(current_setting('app.agent_id', true), ''));

-- Tasks: shared like memory items; written by their owner or their assignee.
CREATE POLICY tasks_select ON tasks FOR SELECT USING (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    OR (visibility IN ('family', 'public')
        AND NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL)
    OR (visibility = 'team' AND team_id = ANY ((SELECT agentbus_my_teams())::text[])));
CREATE POLICY tasks_insert ON tasks FOR INSERT WITH CHECK (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    AND (team_id IS NULL OR agentbus_is_team_member(team_id)));
CREATE POLICY tasks_update ON tasks FOR UPDATE
    USING (NULLIF(current_setting('app.agent_id', true), '') IN (agent_id, assignee))
    WITH CHECK (NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL);
CREATE POLICY tasks_delete ON tasks FOR DELETE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));

CREATE POLICY task_dependencies_select ON task_dependencies FOR SELECT
    USING (EXISTS (SELECT 1 FROM tasks t WHERE t.id = task_id));
CREATE POLICY task_dependencies_insert ON task_dependencies FOR INSERT WITH CHECK (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = task_id
                AND NULLIF(current_setting('app.agent_id', true), '') IN (t.agent_id, t.assignee))
    AND EXISTS (SELECT 1 FROM tasks d WHERE d.id = depends_on));
CREATE POLICY task_dependencies_delete ON task_dependencies FOR DELETE USING (
    EXISTS (SELECT 1 FROM tasks t WHERE t.id = task_id
            AND NULLIF(current_setting('app.agent_id', true), '') IN (t.agent_id, t.assignee)));

CREATE POLICY task_events_select ON task_events FOR SELECT
    USING (EXISTS (SELECT 1 FROM tasks t WHERE t.id = task_id));
CREATE POLICY task_events_insert ON task_events FOR INSERT WITH CHECK (
    by_agent = NULLIF(current_setting('app.agent_id', true), '')
    AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = task_id));

-- Knowledge (issue 6): collections are shared like items, or through grants.
CREATE POLICY knowledge_collections_select ON knowledge_collections FOR SELECT USING (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    OR (visibility IN ('family', 'public')
        AND NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL)
    OR (visibility = 'team' AND team_id = ANY ((SELECT agentbus_my_teams())::text[]))
    OR EXISTS (SELECT 1 FROM knowledge_collection_grants g
               WHERE g.collection_id = id
                 AND g.agent_id = NULLIF(current_setting('app.agent_id', true), '')));
CREATE POLICY knowledge_collections_insert ON knowledge_collections FOR INSERT WITH CHECK (
    agent_id = NULLIF(current_setting('app.agent_id', true), '')
    AND (team_id IS NULL OR agentbus_is_team_member(team_id)));
CREATE POLICY knowledge_collections_update ON knowledge_collections FOR UPDATE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''))
    WITH CHECK (agent_id = NULLIF(current_setting('app.agent_id', true), ''));
CREATE POLICY knowledge_collections_delete ON knowledge_collections FOR DELETE
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''));

CREATE POLICY knowledge_collection_grants_select ON knowledge_collection_grants FOR SELECT
    USING (NULLIF(current_setting('app.agent_id', true), '') IN (agent_id, granted_by));
CREATE POLICY knowledge_collection_grants_insert ON knowledge_collection_grants FOR INSERT
    WITH CHECK (
        granted_by = NULLIF(current_setting('app.agent_id', true), '')
        AND EXISTS (SELECT 1 FROM knowledge_collections c WHERE c.id = collection_id
                    AND c.agent_id = NULLIF(current_setting('app.agent_id', true), '')));
CREATE POLICY knowledge_collection_grants_delete ON knowledge_collection_grants FOR DELETE
    USING (granted_by = NULLIF(current_setting('app.agent_id', true), ''));

CREATE POLICY knowledge_documents_select ON knowledge_documents FOR SELECT
    USING (EXISTS (SELECT 1 FROM knowledge_collections c WHERE c.id = collection_id));
CREATE POLICY knowledge_documents_write ON knowledge_documents FOR ALL
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''))
    WITH CHECK (
        agent_id = NULLIF(current_setting('app.agent_id', true), '')
        AND EXISTS (SELECT 1 FROM knowledge_collections c WHERE c.id = collection_id));
CREATE POLICY knowledge_chunks_select ON knowledge_chunks FOR SELECT
    USING (EXISTS (SELECT 1 FROM knowledge_collections c WHERE c.id = collection_id));
CREATE POLICY knowledge_chunks_write ON knowledge_chunks FOR ALL
    USING (agent_id = NULLIF(current_setting('app.agent_id', true), ''))
    WITH CHECK (
        agent_id = NULLIF(current_setting('app.agent_id', true), '')
        AND EXISTS (SELECT 1 FROM knowledge_documents d WHERE d.id = document_id));

-- Grants: the app role reads and writes rows, nothing more (no TRUNCATE, REFERENCES, TRIGGER;
-- it owns nothing). No function is executable by PUBLIC; the app role may run the helpers its
-- policies and queries call, not the trigger functions (those run as the owner, from triggers).
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO agentbus_app;
REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM agentbus_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO agentbus_app;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'agentbus\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION
    agentbus_my_teams(), agentbus_is_team_member(text), agentbus_in_team(text),
    agentbus_manages_team(text), agentbus_has_open_dependency(text)
TO agentbus_app;
