-- Hosts on other machines (issue 19): agents hold no database credentials. The key that signs
-- host tokens (HMAC-SHA256), the credential a host agent shows the host-scoped internal API
-- (api/internal): 244 bits from the server's strong random source, apart from the API token key
-- so that either can be replaced alone.
INSERT INTO cluster_settings (key, value)
VALUES ('host_key', to_jsonb(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')))
ON CONFLICT (key) DO NOTHING;
