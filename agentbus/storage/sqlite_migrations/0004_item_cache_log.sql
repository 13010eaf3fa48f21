-- The vector cache now also keeps each embedded item itself (so a vector search is answered from
-- memory, without a read transaction), which makes any change to an embedded row a change the
-- cache must see — a reinforcement or a metadata update included, not only the columns that
-- decide where its vector lives.
DROP TRIGGER vector_changes_update;
CREATE TRIGGER vector_changes_update AFTER UPDATE ON memory_items
WHEN old.embedding IS NOT NULL OR new.embedding IS NOT NULL BEGIN
    INSERT INTO vector_changes (item_key) VALUES (new.rowid_key);
END;
