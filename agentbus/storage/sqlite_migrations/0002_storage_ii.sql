-- agentbus SQLite schema, version 2: Storage II — knowledge collections with per-agent grants,
-- documents in chunks, encrypted service keys, observations, model feedback, live candidates.
--
-- The same conventions as 0001: timestamps are fixed-width ISO-8601 UTC text, JSON columns hold
-- canonical JSON text, FTS5 tables are external-content tables keyed by an explicit INTEGER
-- PRIMARY KEY (AUTOINCREMENT: a key names one row forever, which the vector caches rely on).

-- owner is the creator, who owns the collection for good (it holds no grant row). Other agents
-- hold what their grant row says; family/public collections are also readable by every agent
-- without a grant (the shared library).
CREATE TABLE knowledge_collections (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT,
    visibility  TEXT NOT NULL CHECK (visibility IN ('private', 'family', 'public')),
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL
);
CREATE INDEX knowledge_collections_owner ON knowledge_collections (owner);
CREATE INDEX knowledge_collections_library ON knowledge_collections (visibility)
    WHERE visibility IN ('family', 'public');

-- One grant per (collection, agent); no wildcard agents (refused in the application).
CREATE TABLE knowledge_collection_grants (
    collection_id TEXT NOT NULL REFERENCES knowledge_collections (id) ON DELETE CASCADE,
    agent_id      TEXT NOT NULL,
    permission    TEXT NOT NULL CHECK (permission IN ('read', 'write', 'owner')),
    granted_by    TEXT NOT NULL,
    granted_at    TEXT NOT NULL,
    PRIMARY KEY (collection_id, agent_id)
);
CREATE INDEX knowledge_collection_grants_agent
    ON knowledge_collection_grants (agent_id, collection_id, permission);

CREATE TABLE knowledge_documents (
    id            TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES knowledge_collections (id) ON DELETE CASCADE,
    agent_id      TEXT NOT NULL,  -- who ingested it
    title         TEXT NOT NULL,
    content       TEXT NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    chunk_count   INTEGER NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX knowledge_documents_collection
    ON knowledge_documents (collection_id, created_at, id);

-- collection_id is copied from the document so that search filters chunks by permitted
-- collections without a join. Chunks are never updated: a document is ingested or deleted.
CREATE TABLE knowledge_chunks (
    chunk_key     INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id   TEXT NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    collection_id TEXT NOT NULL,
    chunk_index   INTEGER NOT NULL,
    text          TEXT NOT NULL,
    embedding     BLOB,   -- float32 values, like memory_items.embedding
    UNIQUE (document_id, chunk_index)
);
CREATE INDEX knowledge_chunks_collection ON knowledge_chunks (collection_id);

CREATE VIRTUAL TABLE knowledge_chunks_fts USING fts5 (
    text, content = 'knowledge_chunks', content_rowid = 'chunk_key',
    tokenize = 'porter unicode61'
);
CREATE TRIGGER knowledge_chunks_fts_insert AFTER INSERT ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (rowid, text) VALUES (new.chunk_key, new.text);
END;
CREATE TRIGGER knowledge_chunks_fts_delete AFTER DELETE ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (knowledge_chunks_fts, rowid, text)
    VALUES ('delete', old.chunk_key, old.text);
END;
CREATE TRIGGER knowledge_chunks_fts_update AFTER UPDATE OF text ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (knowledge_chunks_fts, rowid, text)
    VALUES ('delete', old.chunk_key, old.text);
    INSERT INTO knowledge_chunks_fts (rowid, text) VALUES (new.chunk_key, new.text);
END;

-- The chunk vector cache's change log (like vector_changes for memory items).
CREATE TABLE knowledge_vector_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_key  INTEGER NOT NULL
);
CREATE TRIGGER knowledge_vector_changes_insert AFTER INSERT ON knowledge_chunks
WHEN new.embedding IS NOT NULL BEGIN
    INSERT INTO knowledge_vector_changes (chunk_key) VALUES (new.chunk_key);
END;
CREATE TRIGGER knowledge_vector_changes_update
AFTER UPDATE OF embedding, collection_id, document_id, chunk_index ON knowledge_chunks BEGIN
    INSERT INTO knowledge_vector_changes (chunk_key) VALUES (new.chunk_key);
END;
CREATE TRIGGER knowledge_vector_changes_delete AFTER DELETE ON knowledge_chunks
WHEN old.embedding IS NOT NULL BEGIN
    INSERT INTO knowledge_vector_changes (chunk_key) VALUES (old.chunk_key);
END;

-- Secrets: only what _crypto.seal returns is stored (the data key wrapped by the master key
-- key_id names, the nonces, the AES-GCM ciphertext); the plaintext never reaches SQLite.
-- The associated data binds agent_id, name and version, so a row copied elsewhere fails.
CREATE TABLE service_keys (
    agent_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    key_id      TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    key_nonce   BLOB NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (agent_id, name)
);

CREATE TABLE observations (
    rowid_key   INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    agent_id    TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    summary     TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}',
    tool        TEXT,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX observations_agent ON observations (agent_id, created_at, id);
CREATE INDEX observations_session ON observations (agent_id, session_id, created_at, id);

CREATE VIRTUAL TABLE observations_fts USING fts5 (
    summary, content = 'observations', content_rowid = 'rowid_key',
    tokenize = 'porter unicode61'
);
CREATE TRIGGER observations_fts_insert AFTER INSERT ON observations BEGIN
    INSERT INTO observations_fts (rowid, summary) VALUES (new.rowid_key, new.summary);
END;
CREATE TRIGGER observations_fts_delete AFTER DELETE ON observations BEGIN
    INSERT INTO observations_fts (observations_fts, rowid, summary)
    VALUES ('delete', old.rowid_key, old.summary);
END;
CREATE TRIGGER observations_fts_update AFTER UPDATE OF summary ON observations BEGIN
    INSERT INTO observations_fts (observations_fts, rowid, summary)
    VALUES ('delete', old.rowid_key, old.summary);
    INSERT INTO observations_fts (rowid, summary) VALUES (new.rowid_key, new.summary);
END;

-- rating is set once: rate() writes it with UPDATE ... WHERE rating IS NULL.
CREATE TABLE model_feedback (
    id              TEXT PRIMARY KEY,
    agent_id        TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    model           TEXT NOT NULL,
    task            TEXT,
    self_evaluation REAL CHECK (self_evaluation BETWEEN 0 AND 1),
    rating          INTEGER CHECK (rating BETWEEN 1 AND 5),
    comment         TEXT,
    metadata        TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL,
    rated_at        TEXT
);
CREATE INDEX model_feedback_agent ON model_feedback (agent_id, created_at, id);
CREATE INDEX model_feedback_session ON model_feedback (agent_id, session_id, created_at, id);
CREATE INDEX model_feedback_model ON model_feedback (agent_id, model, created_at, id);

-- The item ids are kept as plain text (no foreign key): a candidate records what it was
-- compared with or resolved to even after that item is deleted.
CREATE TABLE live_candidates (
    id               TEXT PRIMARY KEY,
    agent_id         TEXT NOT NULL,
    summary          TEXT NOT NULL,
    similar_item_id  TEXT,
    similarity       REAL,
    status           TEXT NOT NULL
                     CHECK (status IN ('pending', 'merged', 'promoted', 'rejected')),
    resolved_item_id TEXT,
    metadata         TEXT NOT NULL DEFAULT '{}',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX live_candidates_agent ON live_candidates (agent_id, created_at, id);
CREATE INDEX live_candidates_status ON live_candidates (agent_id, status, created_at, id);
