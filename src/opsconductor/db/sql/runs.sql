-- What the engine reads to start a run, in one round trip.

-- name: start_context
-- The tenant's connector settings (as connectors.tenant_settings), its masking patterns (the
-- rows and order of secrets.list_patterns) and the wanted assets (the rows of
-- assets.assets_by_id). No row: no such tenant.
SELECT t.record_only, t.host_key_policy,
       coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                 FROM execution.masking_patterns p WHERE p.tenant_id = t.tenant_id),
                '[]'::json) AS masking_patterns,
       coalesce((SELECT json_agg(a ORDER BY a.asset_id) FROM execution.assets a
                 WHERE a.tenant_id = t.tenant_id AND a.asset_id = ANY(%(asset_ids)s)),
                '[]'::json) AS assets
FROM execution.tenants t WHERE t.tenant_id = %(tenant_id)s
