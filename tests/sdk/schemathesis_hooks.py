"""Schemathesis hooks for scripts/contract-test (loaded through SCHEMATHESIS_HOOKS).

They keep the fuzz pass able to test, and change nothing that the checks judge:

- The pass runs with an admin key, and schemathesis reuses ids it saw in earlier responses: it
  finds that key in `GET /v1/keys` and revokes it with `DELETE /v1/keys/{id}`, after which every
  request is a 401 and the rest of the run tests nothing. A DELETE of a key named in
  JOBQ_ST_PROTECTED_KEY_IDS (comma-separated ids) goes to the nil id instead (a documented 404).
  Other keys, e.g. those the fuzzer created with `POST /v1/keys`, can still be revoked.
- `GET /v1/jobs/{id}/wait` holds the request until the job finishes or `timeout_seconds`
  (default 30, at most 60) pass. The fuzzer finds ids of real jobs that will not finish soon
  (scheduled far ahead, paused queues), so a valid wait would take up to a minute and trip the
  request timeout. A valid `timeout_seconds` above 1, or none, becomes 1; invalid values (the
  negative tests) are kept.
"""

import os

import schemathesis

PROTECTED = {i.strip().lower() for i in os.environ.get("JOBQ_ST_PROTECTED_KEY_IDS", "").split(",") if i.strip()}
NIL = "00000000-0000-0000-0000-000000000000"
WAIT_CAP = 1


def _is(case, method, path):
    return case.operation.method.upper() == method and case.operation.path == path


@schemathesis.hook
def before_call(context, case, kwargs):
    if _is(case, "DELETE", "/v1/keys/{id}"):
        params = dict(case.path_parameters or {})
        if str(params.get("id", "")).strip().lower() in PROTECTED:
            params["id"] = NIL
            case.path_parameters = params
    elif _is(case, "GET", "/v1/jobs/{id}/wait"):
        query = dict(case.query or {})
        t = query.get("timeout_seconds")
        if t is None or (type(t) is int and WAIT_CAP < t <= 60):
            query["timeout_seconds"] = WAIT_CAP
            case.query = query
