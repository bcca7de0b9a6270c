"""Writes: every change to the 2SV domain goes through one of these functions.

Each is keyword-only, atomic, and audited where an agent or admin acts. Row locks are taken
through `locking`, in one order, before events are folded. Split by use case:

- `ingestion`: producer events, one or a batch (`validation`, `projection`, `event_rows`)
- `sessions`: troubleshooting sessions and the phone check
- `locks`: an admin's lock lift
- `retention`: the periodic purge of old events (after a checkpoint, `checkpoints`), audit
  entries and removed methods' numbers
- `lookups`: delivery lookups (request, run, sweep); `enqueue` publishes their task
- `incidents`: delivery incidents (detection, and an admin's confirm, dismiss, resolve)
- `audited_reads`: the agent reads that are recorded in the audit trail

Callers write ``services.event_ingest(...)``: the names below are the public surface.
"""

from twosv.services.audited_reads import customer_state_read_audit, lookup_read
from twosv.services.enqueue import lookup_enqueue
from twosv.services.event_rows import EVENT_COLUMNS
from twosv.services.incidents import (
    incident_confirm,
    incident_dismiss,
    incident_resolve,
    incidents_detect,
)
from twosv.services.ingestion import (
    BatchItemResult,
    IngestResult,
    event_ingest,
    events_ingest_batch,
)
from twosv.services.locks import lock_lift
from twosv.services.lookups import (
    LOOKUP_FINISHED,
    LOOKUP_IN_FLIGHT,
    lookup_request,
    lookup_run,
    lookup_running_stale_after,
    lookups_sweep,
)
from twosv.services.projection import method_refold
from twosv.services.retention import retention_purge
from twosv.services.sessions import (
    SESSION_ANSWER_FIELDS,
    phone_numbers_match,
    session_close,
    session_start,
    session_update,
    session_verify_phone,
)
from twosv.services.validation import EVENT_DATA_FIELDS, PRODUCER_EVENT_TYPES

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_DATA_FIELDS",
    "LOOKUP_FINISHED",
    "LOOKUP_IN_FLIGHT",
    "PRODUCER_EVENT_TYPES",
    "SESSION_ANSWER_FIELDS",
    "BatchItemResult",
    "IngestResult",
    "customer_state_read_audit",
    "event_ingest",
    "events_ingest_batch",
    "incident_confirm",
    "incident_dismiss",
    "incident_resolve",
    "incidents_detect",
    "lock_lift",
    "lookup_enqueue",
    "lookup_read",
    "lookup_request",
    "lookup_run",
    "lookup_running_stale_after",
    "lookups_sweep",
    "method_refold",
    "phone_numbers_match",
    "retention_purge",
    "session_close",
    "session_start",
    "session_update",
    "session_verify_phone",
]
