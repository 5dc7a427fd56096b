-- The tables' state timeouts (actors/table.py) replace the three kinds' own timer messages:
-- server.task_timeout {vm_state, task_state}, volume.timeout {status} and port.build_timeout
-- {server_id, host} become actor.state_timeout {state}, in one timer named 'state' per actor.
-- Pending timers, and fired ones still waiting in the outbox, are rewritten so that a cloud
-- upgraded mid-task still ends its transitional states. No table changes shape.
CREATE FUNCTION pg_temp.as_state_timeout(body bytea) RETURNS bytea LANGUAGE sql AS $$
    SELECT convert_to((e || jsonb_build_object(
        'type', 'actor.state_timeout', 'version', 1,
        'body', jsonb_build_object('state', CASE e->>'type'
            WHEN 'server.task_timeout' THEN (e->'body'->>'vm_state') || ':' || (e->'body'->>'task_state')
            WHEN 'volume.timeout' THEN e->'body'->>'status'
            ELSE 'BUILD' END)))::text, 'UTF8')
    FROM (SELECT convert_from(body, 'UTF8')::jsonb AS e) AS envelope
$$;

CREATE FUNCTION pg_temp.is_old_timeout(body bytea) RETURNS boolean LANGUAGE sql AS $$
    SELECT convert_from(body, 'UTF8')::jsonb->>'type' IN ('server.task_timeout', 'volume.timeout', 'port.build_timeout')
$$;

UPDATE timers SET name = 'state', body = pg_temp.as_state_timeout(body)
WHERE name IN ('task', 'build') AND pg_temp.is_old_timeout(body);

UPDATE outbox SET body = pg_temp.as_state_timeout(body)
WHERE exchange = 'actorstack.actors' AND pg_temp.is_old_timeout(body);
DROP FUNCTION pg_temp.as_state_timeout(bytea);
DROP FUNCTION pg_temp.is_old_timeout(bytea);
