-- What each host agent last saw on its host (hostagent/agent.py writes its row at every
-- power-state sync): the instances it keeps, as {server id: power state, or null for an
-- instance directory whose domain is gone}. `actorstack doctor` compares it with `servers` to
-- find domains without servers and servers without domains. Owned by the host agent.
CREATE TABLE host_domains (
    host         text PRIMARY KEY,
    domains      jsonb NOT NULL DEFAULT '{}',
    reported_at  timestamptz NOT NULL DEFAULT now()
);
