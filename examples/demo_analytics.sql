-- The `make run` demo's second database, `analytics`, served as pgcache's source `analytics`:
-- a table of the same name as the app's, other rows, so an answer shows whose it is.
CREATE TABLE IF NOT EXISTS users (
    id     integer PRIMARY KEY,
    name   varchar(100) NOT NULL,
    visits integer NOT NULL DEFAULT 0
);
INSERT INTO users (id, name, visits)
SELECT g, 'analyst' || g, g * 3 FROM generate_series(1, 100) g
ON CONFLICT DO NOTHING;
