-- Fencing tokens are kept per (agent, name), as on PostgreSQL (migration 0001 there): an agent's
-- locks count their own tokens, so one agent's token never makes another agent's write stale.
CREATE TABLE fences_per_agent (
    agent_id  TEXT NOT NULL,
    name      TEXT NOT NULL,
    token     INTEGER NOT NULL,
    PRIMARY KEY (agent_id, name)
);
-- A token of the old table names no agent: keep it for every agent that has written a task
-- (whoever set it is among them), so no write refused before the upgrade is accepted after it.
INSERT INTO fences_per_agent (agent_id, name, token)
SELECT writers.agent_id, f.name, f.token
FROM fences f CROSS JOIN (SELECT DISTINCT by_agent AS agent_id FROM task_events) writers;
DROP TABLE fences;
ALTER TABLE fences_per_agent RENAME TO fences;
