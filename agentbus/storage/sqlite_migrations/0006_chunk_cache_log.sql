-- The chunk vector cache now also keeps each embedded chunk's text and its document's title (so a
-- vector search over knowledge is answered from memory, without a read transaction), which makes
-- any change to an embedded chunk — its text included — and any change to a document's title a
-- change the cache must see. Chunks are never updated through agentbus; these catch raw SQL.
DROP TRIGGER knowledge_vector_changes_update;
CREATE TRIGGER knowledge_vector_changes_update AFTER UPDATE ON knowledge_chunks
WHEN old.embedding IS NOT NULL OR new.embedding IS NOT NULL BEGIN
    INSERT INTO knowledge_vector_changes (chunk_key) VALUES (new.chunk_key);
    INSERT INTO knowledge_vector_changes (chunk_key)
    SELECT old.chunk_key WHERE old.chunk_key <> new.chunk_key;
END;
CREATE TRIGGER knowledge_vector_changes_title AFTER UPDATE OF title ON knowledge_documents
WHEN old.title IS NOT new.title BEGIN
    INSERT INTO knowledge_vector_changes (chunk_key)
    SELECT chunk_key FROM knowledge_chunks WHERE document_id = new.id AND embedding IS NOT NULL;
END;
