-- 0009 — fences kept per (scope, name): an agent's own, or the family's.
--
-- 0001 keeps the newest fencing token per (agent_id, name), and 0002 lets only that agent see its
-- rows. That is right for a lock scoped to one agent (its tokens come from the agent's own
-- counter) but not for a family-wide lock or heartbeat, whose tokens come from one counter for
-- the family: a holder that lost the lock to another agent was still accepted, because only the
-- other agent's row held the newer token. A family-wide fence is now kept in one row under
-- agent_id '~family' (agentbus._keys.FAMILY; '~' cannot occur in an agent id, so no agent owns
-- it). Such a row holds only a name and a number, so every agent (app.agent_id set) may read it,
-- insert it and move its token forward; no agent may delete it (that would let a stale holder
-- through again). Agent-scope rows stay private to their agent (fences_own, 0002).
--
-- Tokens an agent recorded for a family-wide lock before this migration stay in its own row and
-- are not copied into the family's: agent-scope and family-wide locks of one name count their
-- tokens apart, so a token from an agent's row could refuse every family write for a long time.

CREATE POLICY fences_family_select ON fences FOR SELECT
    USING (agent_id = '~family' AND NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL);
CREATE POLICY fences_family_insert ON fences FOR INSERT
    WITH CHECK (agent_id = '~family'
                AND NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL);
CREATE POLICY fences_family_update ON fences FOR UPDATE
    USING (agent_id = '~family' AND NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL)
    WITH CHECK (agent_id = '~family'
                AND NULLIF(current_setting('app.agent_id', true), '') IS NOT NULL);

-- A fence only moves forward, and a row keeps its scope and name: otherwise any agent could lower
-- the family's token, or move the family's row into its own scope (fences_own's check allows
-- that new row) — both would let a stale holder's write through. The adapter's upsert never
-- lowers a token (ON CONFLICT … WHERE f.token <= EXCLUDED.token), so it never meets this error.
CREATE FUNCTION agentbus_fence_forward() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NEW.agent_id IS DISTINCT FROM OLD.agent_id OR NEW.name IS DISTINCT FROM OLD.name THEN
        RAISE EXCEPTION 'the agent_id and name of a fence row cannot change'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.token < OLD.token THEN
        RAISE EXCEPTION 'fence % of % cannot go back from token % to %',
            OLD.name, OLD.agent_id, OLD.token, NEW.token USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION agentbus_fence_forward() FROM PUBLIC;
CREATE TRIGGER fences_forward BEFORE UPDATE ON fences
    FOR EACH ROW EXECUTE FUNCTION agentbus_fence_forward();
