-- Worker heartbeats for /metrics: when each worker process last claimed work (or looked for
-- it and found none), per role, so the API process's /metrics can show whether any worker is
-- alive. Each worker writes its rows at most about once a second (broker/workers/heartbeat.py),
-- not on every claim; housekeeping deletes the rows of processes gone for an hour.
-- UNLOGGED: a heartbeat is worth neither a WAL record nor a synchronous commit; after a crash
-- or a failover the table starts empty and every live worker writes again within a second.
CREATE UNLOGGED TABLE worker_heartbeats (
    process        text NOT NULL,  -- host:pid:nonce, as in leader_leases.holder
    role           text NOT NULL CHECK (role IN ('delivery', 'aggregator')),
    last_claim_at  timestamptz NOT NULL,
    PRIMARY KEY (process, role)
);
