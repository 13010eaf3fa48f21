-- 0001 — tables and indexes of the agentbus store (DESIGN.md §4).
--
-- Run by the owner role (agentbus_owner) under the migration lock, in one transaction with the
-- ledger row. {embedding_dim} is filled in from storage.embeddingDim before it runs.
--
-- Conventions: ids are UUIDv7 text made by agentbus (two backends hold a row under the same id);
-- timestamps are timestamptz written by agentbus in UTC; JSON is jsonb; `agent_id` is the owning
-- agent. team_id has no foreign key on purpose: a foreign-key check ignores row-level security,
-- so it would tell an agent whether a team it cannot see exists; membership is checked by the
-- insert policies (0002) instead. Teams are disbanded, never deleted.

-- Family registry (not agent-scoped: every agent of the family may read it).
CREATE TABLE agents (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    role        text,
    status      text NOT NULL CHECK (status IN ('active', 'idle', 'offline', 'disabled')),
    config      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE teams (
    id          text PRIMARY KEY,
    agent_id    text NOT NULL,  -- creator
    name        text NOT NULL,
    lead        text NOT NULL,
    status      text NOT NULL CHECK (status IN ('active', 'disbanded')),
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX teams_agent_idx ON teams (agent_id);

CREATE TABLE team_members (
    team_id     text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    agent_id    text NOT NULL,
    role        text NOT NULL CHECK (role IN ('lead', 'member')),
    joined_at   timestamptz NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,  -- join order (joined_at ties in one call)
    PRIMARY KEY (team_id, agent_id)
);
CREATE INDEX team_members_agent_idx ON team_members (agent_id, team_id);

CREATE TABLE resources (
    id          text PRIMARY KEY,
    agent_id    text NOT NULL,
    url         text NOT NULL,
    modality    text NOT NULL,
    caption     text,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL
);
CREATE INDEX resources_agent_idx ON resources (agent_id, created_at DESC, id DESC);

CREATE TABLE memory_items (
    id                  text PRIMARY KEY,
    agent_id            text NOT NULL,
    summary             text NOT NULL,
    memory_type         text NOT NULL
        CHECK (memory_type IN ('profile', 'event', 'knowledge', 'behavior', 'skill', 'tool')),
    visibility          text NOT NULL CHECK (visibility IN ('private', 'team', 'family', 'public')),
    team_id             text,
    resource_id         text REFERENCES resources (id) ON DELETE SET NULL,
    content_hash        text NOT NULL,
    significance        double precision NOT NULL CHECK (significance BETWEEN 0 AND 1),
    reinforcement_count integer NOT NULL DEFAULT 0,
    last_reinforced_at  timestamptz,
    happened_at         timestamptz,
    embedding           vector({embedding_dim}),
    metadata            jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    summary_tsv         tsvector GENERATED ALWAYS AS (to_tsvector('english', summary)) STORED,
    CONSTRAINT memory_items_team_visibility CHECK (visibility <> 'team' OR team_id IS NOT NULL),
    CONSTRAINT memory_items_content UNIQUE (agent_id, content_hash)
);
-- The three arms of the visibility predicate, each with the list order, so that
-- `agent_id = $1 OR visibility IN ('family', 'public') OR team_id = ANY($2)` is a BitmapOr.
CREATE INDEX memory_items_agent_idx ON memory_items (agent_id, created_at DESC, id DESC);
CREATE INDEX memory_items_shared_idx ON memory_items (visibility, created_at DESC, id DESC)
    WHERE visibility IN ('family', 'public');
CREATE INDEX memory_items_team_idx ON memory_items (team_id, created_at DESC, id DESC)
    WHERE team_id IS NOT NULL;
-- Index-only counts of the visible embedded rows, per arm (vector search picks its path by it).
CREATE INDEX memory_items_embedded_idx ON memory_items (agent_id, memory_type, visibility)
    WHERE embedding IS NOT NULL;
CREATE INDEX memory_items_embedded_shared_idx ON memory_items (visibility, memory_type, agent_id)
    WHERE embedding IS NOT NULL AND visibility IN ('family', 'public');
CREATE INDEX memory_items_fts_idx ON memory_items USING gin (summary_tsv);
CREATE INDEX memory_items_embedding_hnsw ON memory_items
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 200);

CREATE TABLE categories (
    id          text PRIMARY KEY,
    agent_id    text NOT NULL,
    name        text NOT NULL,
    name_key    text NOT NULL,  -- lower-cased by agentbus: the same key on every backend
    description text,
    created_at  timestamptz NOT NULL,
    CONSTRAINT categories_name UNIQUE (agent_id, name_key)
);

CREATE TABLE item_categories (
    item_id     text NOT NULL REFERENCES memory_items (id) ON DELETE CASCADE,
    category_id text NOT NULL REFERENCES categories (id) ON DELETE CASCADE,
    agent_id    text NOT NULL,  -- who linked them
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (item_id, category_id)
);
CREATE INDEX item_categories_category_idx ON item_categories (category_id);

CREATE TABLE entities (
    id          text PRIMARY KEY,
    agent_id    text NOT NULL,
    name        text NOT NULL,
    name_key    text NOT NULL,
    entity_type text NOT NULL,
    profile     text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT entities_name UNIQUE (agent_id, name_key)
);
CREATE INDEX entities_agent_idx ON entities (agent_id, created_at DESC, id DESC);

CREATE TABLE item_entities (
    item_id     text NOT NULL REFERENCES memory_items (id) ON DELETE CASCADE,
    entity_id   text NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    agent_id    text NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (item_id, entity_id)
);
CREATE INDEX item_entities_entity_idx ON item_entities (entity_id);

CREATE TABLE reflections (
    id           text PRIMARY KEY,
    agent_id     text NOT NULL,
    content      text NOT NULL,
    period_start timestamptz,
    period_end   timestamptz,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL
);
CREATE INDEX reflections_agent_idx ON reflections (agent_id, created_at DESC, id DESC);

CREATE TABLE lessons (
    id                  text PRIMARY KEY,
    agent_id            text NOT NULL,
    lesson              text NOT NULL,
    context             text,
    confidence          double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    reinforcement_count integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    lesson_tsv          tsvector GENERATED ALWAYS AS
        (to_tsvector('english', lesson || ' ' || coalesce(context, ''))) STORED
);
CREATE INDEX lessons_agent_idx ON lessons (agent_id, created_at DESC, id DESC);
CREATE INDEX lessons_fts_idx ON lessons USING gin (lesson_tsv);

-- Knowledge library (issue 6 fills these in; the tables and their policies exist already).
CREATE TABLE knowledge_collections (
    id          text PRIMARY KEY,
    agent_id    text NOT NULL,
    name        text NOT NULL,
    description text,
    visibility  text NOT NULL CHECK (visibility IN ('private', 'team', 'family', 'public')),
    team_id     text,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CHECK (visibility <> 'team' OR team_id IS NOT NULL)
);
CREATE INDEX knowledge_collections_agent_idx ON knowledge_collections (agent_id);

CREATE TABLE knowledge_collection_grants (
    collection_id text NOT NULL REFERENCES knowledge_collections (id) ON DELETE CASCADE,
    agent_id      text NOT NULL,  -- grantee
    permission    text NOT NULL CHECK (permission IN ('read', 'write', 'admin')),
    granted_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (collection_id, agent_id)
);
CREATE INDEX knowledge_collection_grants_agent_idx ON knowledge_collection_grants (agent_id);

CREATE TABLE knowledge_documents (
    id            text PRIMARY KEY,
    collection_id text NOT NULL REFERENCES knowledge_collections (id) ON DELETE CASCADE,
    agent_id      text NOT NULL,
    title         text NOT NULL,
    source_url    text,
    content_hash  text NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX knowledge_documents_collection_idx ON knowledge_documents (collection_id);

CREATE TABLE knowledge_chunks (
    id            text PRIMARY KEY,
    document_id   text NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    collection_id text NOT NULL REFERENCES knowledge_collections (id) ON DELETE CASCADE,
    agent_id      text NOT NULL,
    chunk_index   integer NOT NULL,
    content       text NOT NULL,
    embedding     vector({embedding_dim}),
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    content_tsv   tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED
);
CREATE INDEX knowledge_chunks_collection_idx ON knowledge_chunks (collection_id);
CREATE INDEX knowledge_chunks_fts_idx ON knowledge_chunks USING gin (content_tsv);
CREATE INDEX knowledge_chunks_embedding_hnsw ON knowledge_chunks
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 200);

CREATE TABLE tasks (
    id            text PRIMARY KEY,
    -- Humans' handle: the last 8 hex digits (random bits; the UUIDv7 prefix is a timestamp).
    short_id      text GENERATED ALWAYS AS (right(replace(id, '-', ''), 8)) STORED,
    agent_id      text NOT NULL,  -- creator / owner
    title         text NOT NULL,
    description   text,
    status        text NOT NULL
        CHECK (status IN ('pending', 'blocked', 'in_progress', 'completed', 'failed', 'cancelled')),
    priority      text NOT NULL CHECK (priority IN ('urgent', 'high', 'normal', 'low', 'background')),
    -- Sort key (urgent first): priorities are never sorted as strings.
    priority_rank smallint GENERATED ALWAYS AS (CASE priority
        WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 WHEN 'low' THEN 3
        ELSE 4 END) STORED,
    assignee      text,
    team_id       text,
    project       text,
    tags          text[] NOT NULL DEFAULT '{}',
    visibility    text NOT NULL CHECK (visibility IN ('private', 'team', 'family', 'public')),
    due_at        timestamptz,
    started_at    timestamptz,
    completed_at  timestamptz,
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    search_tsv    tsvector GENERATED ALWAYS AS
        (to_tsvector('english', title || ' ' || coalesce(description, ''))) STORED,
    CONSTRAINT tasks_team_visibility CHECK (visibility <> 'team' OR team_id IS NOT NULL)
);
CREATE INDEX tasks_agent_idx ON tasks (agent_id, priority_rank, due_at, created_at, id);
CREATE INDEX tasks_shared_idx ON tasks (visibility, priority_rank, due_at, created_at, id)
    WHERE visibility IN ('family', 'public');
CREATE INDEX tasks_team_idx ON tasks (team_id, priority_rank, due_at, created_at, id)
    WHERE team_id IS NOT NULL;
CREATE INDEX tasks_assignee_idx ON tasks (assignee) WHERE assignee IS NOT NULL;
CREATE INDEX tasks_project_idx ON tasks (project) WHERE project IS NOT NULL;
CREATE INDEX tasks_short_id_idx ON tasks (short_id);
CREATE INDEX tasks_ready_idx ON tasks (priority_rank, due_at, created_at, id)
    WHERE status = 'pending';
CREATE INDEX tasks_fts_idx ON tasks USING gin (search_tsv);

CREATE TABLE task_dependencies (
    task_id     text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on  text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    agent_id    text NOT NULL,  -- who added it
    created_at  timestamptz NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,  -- the order they were added
    PRIMARY KEY (task_id, depends_on),
    CHECK (task_id <> depends_on)
);
CREATE INDEX task_dependencies_depends_on_idx ON task_dependencies (depends_on);

CREATE TABLE task_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    kind        text NOT NULL,
    by_agent    text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX task_events_task_idx ON task_events (task_id, at, id);

-- Fencing tokens seen per (agent, name): a write carrying an older token is refused.
CREATE TABLE fences (
    agent_id    text NOT NULL,
    name        text NOT NULL,
    token       bigint NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (agent_id, name)
);

-- Infrastructure (filled in by later issues).
CREATE TABLE service_keys (
    id          text PRIMARY KEY,
    agent_id    text NOT NULL,
    name        text NOT NULL,
    version     integer NOT NULL,
    key_id      text NOT NULL,  -- which master key wrapped the data key
    wrapped_key bytea NOT NULL,
    nonce       bytea NOT NULL,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL,
    CONSTRAINT service_keys_version UNIQUE (agent_id, name, version)
);

CREATE TABLE observations (
    id          text PRIMARY KEY,
    agent_id    text NOT NULL,
    session_id  text,
    kind        text NOT NULL,
    content     text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL
);
CREATE INDEX observations_agent_idx ON observations (agent_id, created_at DESC, id DESC);

CREATE TABLE model_feedback (
    id          text PRIMARY KEY,
    agent_id    text NOT NULL,
    provider    text NOT NULL,
    model       text NOT NULL,
    task_kind   text,
    score       double precision,
    latency_ms  double precision,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL
);
CREATE INDEX model_feedback_agent_idx ON model_feedback (agent_id, created_at DESC, id DESC);

CREATE TABLE live_candidates (
    id              text PRIMARY KEY,
    agent_id        text NOT NULL,
    summary         text NOT NULL,
    content_hash    text NOT NULL,
    memory_type     text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    matched_item_id text REFERENCES memory_items (id) ON DELETE SET NULL,
    similarity      double precision,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL
);
CREATE INDEX live_candidates_agent_idx ON live_candidates (agent_id, created_at DESC, id DESC);
