-- SFTP host keys trusted on first use: the key a server presented the first time Headrace connected to it, enforced
-- on every later connection (like ssh's known_hosts). In Postgres, not in a file, so every instance of every service
-- (and the CLI, on another machine) trusts the same key.
CREATE TABLE headrace.sftp_host_keys (
    host text NOT NULL,                         -- as the definition names it, lower-cased
    port integer NOT NULL,
    public_key text NOT NULL,                   -- OpenSSH format: "ssh-ed25519 AAAA…"
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, port)
);

-- Collector and export credentials are sealed by the services (AES-GCM under HEADRACE_SECRET_KEY, `enc:v1:…`),
-- which SQL cannot do without the key: rows written before are sealed when the services next read them.
COMMENT ON COLUMN headrace.collectors.definition IS 'credentials sealed as enc:v1:… (headrace/secrets.py)';
COMMENT ON COLUMN headrace.exports.definition IS 'credentials sealed as enc:v1:… (headrace/secrets.py)';
