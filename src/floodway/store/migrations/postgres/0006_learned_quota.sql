-- floodway schema, version 6: learned quotas.

-- an adaptive limit's floor and ceiling, "floor|ceiling" as rates ("1/min|500/s"; either may be empty)
ALTER TABLE limits ADD COLUMN bounds TEXT;
-- what the destination taught about this key (floodway.quota.Learned as JSON): the effective
-- rate, where it came from, and the 429s counted by kind; NULL: nothing learned, the declared rate holds
ALTER TABLE limit_keys ADD COLUMN learned TEXT;
