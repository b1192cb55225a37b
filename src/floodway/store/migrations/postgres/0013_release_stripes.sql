-- floodway schema for PostgreSQL, version 13: a finished job gives its concurrency slots back
-- without locking its limit key's row, which every claim locks. limit_keys.running now counts
-- the slots taken, and limit_releases the slots given back, in a row per connection; a key's
-- running jobs are the difference (see the store's queries module). Both only grow: bigint.
ALTER TABLE limit_keys ALTER COLUMN running TYPE bigint;
CREATE TABLE limit_releases (
    limit_name text NOT NULL,
    key        text NOT NULL,
    stripe     integer NOT NULL,  -- the releasing connection's backend pid; 0: connections gone
    n          bigint NOT NULL,
    PRIMARY KEY (limit_name, key, stripe)
);
