/**
 * The one database: snapshots, their labels, and the thin devices backing
 * them (plus the base device). Devices carry an intent state so that start-up
 * can finish or undo whatever a crash interrupted.
 */
export const SCHEMA_VERSION = 2;

/** Steps from version N-1 to N, run in order on an older database. */
export const MIGRATIONS: Readonly<Record<number, string>> = {
  2: "ALTER TABLE devices ADD COLUMN fs_bytes INTEGER",
};

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

-- state: 'creating' = intent recorded, the pool may or may not have the id;
--        'ready'    = in the pool;
--        'deleting' = no snapshot uses it, the pool may still have the id.
-- role:  'base' (the pre-formatted origin of parentless snapshots) | 'snapshot'
--        | 'foreign' (an id the pool already had: never handed out, never deleted).
CREATE TABLE IF NOT EXISTS devices (
  thin_id    INTEGER PRIMARY KEY,
  dm_name    TEXT NOT NULL UNIQUE,
  role       TEXT NOT NULL CHECK (role IN ('base', 'snapshot', 'foreign')),
  state      TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'deleting')),
  origin_id  INTEGER,
  size_bytes INTEGER NOT NULL,
  fs_type    TEXT NOT NULL,
  -- whether the device should be active (mapped in /dev/mapper)
  active     INTEGER NOT NULL DEFAULT 0,
  -- whether its blocks should be discarded before delete
  discard    INTEGER NOT NULL DEFAULT 0,
  -- the filesystem's own size when thinsnap grew it (this device's or an
  -- ancestor's grow); NULL: as made by mkfs on the base
  fs_bytes   INTEGER
);
CREATE INDEX IF NOT EXISTS devices_state ON devices (state) WHERE state != 'ready';

CREATE TABLE IF NOT EXISTS snapshots (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  name         TEXT NOT NULL UNIQUE,
  parent_id    INTEGER REFERENCES snapshots (id),
  kind         TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
  created_ms   INTEGER NOT NULL,
  updated_ms   INTEGER NOT NULL,
  thin_id      INTEGER NOT NULL UNIQUE REFERENCES devices (thin_id),
  -- total mapped bytes of the device, frozen at Commit
  mapped_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots (parent_id);

CREATE TABLE IF NOT EXISTS labels (
  snapshot_id INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  key         TEXT NOT NULL,
  value       TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, key)
) WITHOUT ROWID;
`;
