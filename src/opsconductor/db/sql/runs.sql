-- What the engine reads to start a run, in one round trip.

-- name: start_context
-- Set-based (db/batching.py): per item (tenant, wanted asset ids as a JSON array) the
-- tenant's connector settings (as connectors.tenant_settings), its masking patterns (the
-- rows and order of secrets.list_patterns) and the wanted assets (whole rows of
-- execution.assets). No row for an item: no such tenant.
SELECT t.ord, tn.record_only, tn.host_key_policy, tn.local_execution, tn.local_network,
       coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                 FROM execution.masking_patterns p WHERE p.tenant_id = tn.tenant_id),
                '[]'::json) AS masking_patterns,
       coalesce((SELECT json_agg(a ORDER BY a.asset_id) FROM execution.assets a
                 WHERE a.tenant_id = tn.tenant_id
                   AND a.asset_id = ANY(ARRAY(SELECT jsonb_array_elements_text(t.asset_ids)))),
                '[]'::json) AS assets
FROM jsonb_to_recordset(%(items)s::jsonb) AS t(ord int, tenant_id text, asset_ids jsonb)
JOIN execution.tenants tn ON tn.tenant_id = t.tenant_id
