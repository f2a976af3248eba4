-- 0006: approval settings per tenant and the decisions of each approver (issue 5).

ALTER TABLE execution.tenants
    ADD COLUMN approval_quorum smallint NOT NULL DEFAULT 1
        CHECK (approval_quorum BETWEEN 1 AND 10),
    ADD COLUMN approval_windows_s integer[] NOT NULL DEFAULT '{300,900,1800}'
        CHECK (cardinality(approval_windows_s) = 3 AND 0 < ALL (approval_windows_s)),
    ADD COLUMN on_approval_invalidated text NOT NULL DEFAULT 'reapprove'
        CHECK (on_approval_invalidated IN ('reapprove', 'cancel'));

CREATE TABLE execution.approval_decisions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    approval_id  bigint NOT NULL REFERENCES execution.approvals ON DELETE CASCADE,
    actor_id     text NOT NULL,
    decision     text NOT NULL CHECK (decision IN ('approve', 'reject')),
    plan_hash    text,
    comment      text,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (approval_id, actor_id)
);
