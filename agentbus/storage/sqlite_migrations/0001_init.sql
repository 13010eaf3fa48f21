-- agentbus SQLite schema, version 1.
--
-- Every table that FTS5 indexes has an explicit INTEGER PRIMARY KEY (rowid_key) beside the UUID
-- id: an external-content FTS5 table refers to its rows by that key, and VACUUM may renumber
-- implicit rowids but never an INTEGER PRIMARY KEY. AUTOINCREMENT keeps keys from being reused,
-- so the vector cache can trust a key to name one row forever.
--
-- Timestamps are ISO-8601 UTC text with microseconds ('2024-05-01T12:00:00.000000Z'): they sort
-- as text and round-trip exactly. JSON columns hold canonical JSON text (sorted keys).

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT,
    status      TEXT NOT NULL,
    config      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    lead        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active',
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    disbanded_at TEXT
);
CREATE INDEX teams_created_by ON teams (created_by);

-- member_key gives join order among members who joined in the same microsecond.
CREATE TABLE team_members (
    member_key  INTEGER PRIMARY KEY AUTOINCREMENT,
    team_id     TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    agent_id    TEXT NOT NULL,
    role        TEXT NOT NULL,
    joined_at   TEXT NOT NULL,
    UNIQUE (team_id, agent_id)
);
CREATE INDEX team_members_agent ON team_members (agent_id, team_id);

CREATE TABLE resources (
    rowid_key   INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    agent_id    TEXT NOT NULL,
    url         TEXT NOT NULL,
    modality    TEXT NOT NULL,
    caption     TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL
);
CREATE INDEX resources_agent ON resources (agent_id, created_at);

CREATE TABLE memory_items (
    rowid_key           INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    agent_id            TEXT NOT NULL,
    summary             TEXT NOT NULL,
    memory_type         TEXT NOT NULL,
    visibility          TEXT NOT NULL,
    team_id             TEXT REFERENCES teams (id),
    resource_id         TEXT REFERENCES resources (id) ON DELETE SET NULL,
    content_hash        TEXT NOT NULL,
    significance        REAL NOT NULL,
    reinforcement_count INTEGER NOT NULL DEFAULT 0,
    last_reinforced_at  TEXT,
    happened_at         TEXT,
    embedding           BLOB,   -- float32 values, array('f').tobytes()
    metadata            TEXT NOT NULL DEFAULT '{}',
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (agent_id, content_hash)
);
-- list_items reads each visibility branch in (created_at, id) order from one of these indexes;
-- get_stats counts from the covering and partial ones without touching the rows (and blobs).
CREATE INDEX memory_items_agent ON memory_items (agent_id, created_at, id);
CREATE INDEX memory_items_shared ON memory_items (visibility, created_at, id);
CREATE INDEX memory_items_team ON memory_items (team_id, created_at, id) WHERE team_id IS NOT NULL;
CREATE INDEX memory_items_agent_type ON memory_items (agent_id, memory_type);
CREATE INDEX memory_items_embedded ON memory_items (agent_id) WHERE embedding IS NOT NULL;

CREATE VIRTUAL TABLE memory_items_fts USING fts5 (
    summary, content = 'memory_items', content_rowid = 'rowid_key', tokenize = 'porter unicode61'
);
CREATE TRIGGER memory_items_fts_insert AFTER INSERT ON memory_items BEGIN
    INSERT INTO memory_items_fts (rowid, summary) VALUES (new.rowid_key, new.summary);
END;
CREATE TRIGGER memory_items_fts_delete AFTER DELETE ON memory_items BEGIN
    INSERT INTO memory_items_fts (memory_items_fts, rowid, summary)
    VALUES ('delete', old.rowid_key, old.summary);
END;
CREATE TRIGGER memory_items_fts_update AFTER UPDATE OF summary ON memory_items BEGIN
    INSERT INTO memory_items_fts (memory_items_fts, rowid, summary)
    VALUES ('delete', old.rowid_key, old.summary);
    INSERT INTO memory_items_fts (rowid, summary) VALUES (new.rowid_key, new.summary);
END;

-- Every change to a row the vector cache holds (or should hold) appends its key here, so a cache
-- in any process catches up by reading the keys after the last seq it saw.
CREATE TABLE vector_changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    item_key  INTEGER NOT NULL
);
CREATE TRIGGER vector_changes_insert AFTER INSERT ON memory_items
WHEN new.embedding IS NOT NULL BEGIN
    INSERT INTO vector_changes (item_key) VALUES (new.rowid_key);
END;
CREATE TRIGGER vector_changes_update
AFTER UPDATE OF embedding, agent_id, visibility, team_id, memory_type ON memory_items
WHEN old.embedding IS NOT new.embedding OR (new.embedding IS NOT NULL AND (
    old.agent_id IS NOT new.agent_id OR old.visibility IS NOT new.visibility
    OR old.team_id IS NOT new.team_id OR old.memory_type IS NOT new.memory_type)) BEGIN
    INSERT INTO vector_changes (item_key) VALUES (new.rowid_key);
END;
CREATE TRIGGER vector_changes_delete AFTER DELETE ON memory_items
WHEN old.embedding IS NOT NULL BEGIN
    INSERT INTO vector_changes (item_key) VALUES (old.rowid_key);
END;

CREATE TABLE categories (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL,  -- the name lower-cased in Python (Unicode-aware, like PostgreSQL)
    description TEXT,
    created_at  TEXT NOT NULL,
    UNIQUE (agent_id, name_key)
);

CREATE TABLE item_categories (
    item_id     TEXT NOT NULL REFERENCES memory_items (id) ON DELETE CASCADE,
    category_id TEXT NOT NULL REFERENCES categories (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (item_id, category_id)
);
CREATE INDEX item_categories_category ON item_categories (category_id);

CREATE TABLE entities (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    profile     TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (agent_id, name_key)
);

CREATE TABLE item_entities (
    item_id     TEXT NOT NULL REFERENCES memory_items (id) ON DELETE CASCADE,
    entity_id   TEXT NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (item_id, entity_id)
);
CREATE INDEX item_entities_entity ON item_entities (entity_id);

CREATE TABLE reflections (
    id           TEXT PRIMARY KEY,
    agent_id     TEXT NOT NULL,
    content      TEXT NOT NULL,
    period_start TEXT,
    period_end   TEXT,
    metadata     TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL
);
CREATE INDEX reflections_agent ON reflections (agent_id, created_at);

CREATE TABLE lessons (
    rowid_key           INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    agent_id            TEXT NOT NULL,
    lesson              TEXT NOT NULL,
    context             TEXT,
    confidence          REAL NOT NULL,
    reinforcement_count INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX lessons_agent ON lessons (agent_id, created_at);

CREATE VIRTUAL TABLE lessons_fts USING fts5 (
    lesson, context, content = 'lessons', content_rowid = 'rowid_key',
    tokenize = 'porter unicode61'
);
CREATE TRIGGER lessons_fts_insert AFTER INSERT ON lessons BEGIN
    INSERT INTO lessons_fts (rowid, lesson, context)
    VALUES (new.rowid_key, new.lesson, new.context);
END;
CREATE TRIGGER lessons_fts_delete AFTER DELETE ON lessons BEGIN
    INSERT INTO lessons_fts (lessons_fts, rowid, lesson, context)
    VALUES ('delete', old.rowid_key, old.lesson, old.context);
END;
CREATE TRIGGER lessons_fts_update AFTER UPDATE OF lesson, context ON lessons BEGIN
    INSERT INTO lessons_fts (lessons_fts, rowid, lesson, context)
    VALUES ('delete', old.rowid_key, old.lesson, old.context);
    INSERT INTO lessons_fts (rowid, lesson, context)
    VALUES (new.rowid_key, new.lesson, new.context);
END;

CREATE TABLE tasks (
    rowid_key     INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    short_id      TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    title         TEXT NOT NULL,
    description   TEXT,
    status        TEXT NOT NULL,
    priority      TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,  -- PRIORITY_RANK: urgent 0 ... background 4, never text order
    assignee      TEXT,
    team_id       TEXT REFERENCES teams (id),
    project       TEXT,
    tags          TEXT NOT NULL DEFAULT '[]',
    visibility    TEXT NOT NULL,
    due_at        TEXT,
    started_at    TEXT,
    completed_at  TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX tasks_agent ON tasks (agent_id);
CREATE INDEX tasks_short_id ON tasks (short_id);
CREATE INDEX tasks_order ON tasks (priority_rank, due_at, created_at, id);
CREATE INDEX tasks_status ON tasks (status, priority_rank);
CREATE INDEX tasks_project ON tasks (project) WHERE project IS NOT NULL;
CREATE INDEX tasks_assignee ON tasks (assignee);

CREATE VIRTUAL TABLE tasks_fts USING fts5 (
    title, description, content = 'tasks', content_rowid = 'rowid_key',
    tokenize = 'porter unicode61'
);
CREATE TRIGGER tasks_fts_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO tasks_fts (rowid, title, description)
    VALUES (new.rowid_key, new.title, new.description);
END;
CREATE TRIGGER tasks_fts_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, title, description)
    VALUES ('delete', old.rowid_key, old.title, old.description);
END;
CREATE TRIGGER tasks_fts_update AFTER UPDATE OF title, description ON tasks BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, title, description)
    VALUES ('delete', old.rowid_key, old.title, old.description);
    INSERT INTO tasks_fts (rowid, title, description)
    VALUES (new.rowid_key, new.title, new.description);
END;

-- dep_key keeps the order in which dependencies were added.
CREATE TABLE task_dependencies (
    dep_key     INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on  TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    UNIQUE (task_id, depends_on)
);
CREATE INDEX task_dependencies_depends_on ON task_dependencies (depends_on);

CREATE TABLE task_events (
    event_key   INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    by_agent    TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX task_events_task ON task_events (task_id, event_key);

-- Fencing tokens for heartbeat-driven writes: the highest token seen per name.
CREATE TABLE fences (
    name   TEXT PRIMARY KEY,
    token  INTEGER NOT NULL
);

-- Store-wide settings (the embedding dimension the vectors were written with).
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
