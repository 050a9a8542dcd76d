#!/usr/bin/env python3
"""The whole job lifecycle through the Python SDK generated from openapi/jobq.json.

Run by scripts/contract-test against a live jobq (with an SMTP sink behind it):

    PYTHONPATH=<dir holding jobq_client> python tests/sdk/lifecycle.py --base-url URL --token TOKEN

Uses nothing but the standard library and the generated SDK (`jobq_client`, and httpx only for
the SDK's own timeout type). Every call goes through a generated operation and every response is
read through the generated models: if the spec and the server disagree, a parse fails or a check
below fails. Exits 1 at the first failed check, naming it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import time
import uuid

try:
    import httpx
    from jobq_client import AuthenticatedClient, Client
    from jobq_client.api.health import healthz
    from jobq_client.api.jobs import (
        enqueue_batch,
        enqueue_email,
        enqueue_hash,
        enqueue_long_running,
        get_job,
        list_job_events,
        list_jobs,
        wait_job,
    )
    from jobq_client.api.keys import create_key, revoke_key
    from jobq_client.api.operations import cancel_job, count_jobs, get_stats, retry_job
    from jobq_client.api.schedules import (
        create_schedule,
        delete_schedule,
        list_schedules,
        pause_schedule,
        resume_schedule,
    )
    from jobq_client.models import (
        Base64Data,
        CreatedKey,
        CreateKey,
        CreateSchedule,
        EnqueueBatch,
        EnqueueEmail,
        EnqueueHash,
        EnqueueLongRunning,
        ErrorBody,
        EventPage,
        EventType,
        HashAlgorithm,
        Job,
        JobCounts,
        JobKind,
        JobList,
        JobPage,
        JobRequestEnqueueEmail,
        JobRequestEnqueueEmailKind,
        JobRequestEnqueueHash,
        JobRequestEnqueueHashKind,
        JobRequestEnqueueLongRunning,
        JobRequestEnqueueLongRunningKind,
        JobResultEmailResult,
        JobResultHashResult,
        JobResultLongRunningResult,
        JobStatus,
        KeyInfo,
        Role,
        Schedule,
        ScheduledJobScheduledHash,
        ScheduledJobScheduledHashKind,
        ScheduleList,
        TimeZone,
    )
    from jobq_client.types import UNSET
except ImportError as exc:  # the generator dropped an operation or a model (see its warnings)
    print(f"lifecycle: FAIL: the generated SDK lacks something this test needs: {exc}", file=sys.stderr)
    sys.exit(1)

TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


class CheckFailed(Exception):
    pass


def check(cond: object, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


def expect(resp, status: int, model: type, what: str):
    """The response has `status` and its body parsed into `model`; returns the parsed body."""
    body = resp.content.decode("utf-8", "replace")
    if len(body) > 600:
        body = body[:600] + "..."
    check(
        int(resp.status_code) == status,
        f"{what}: expected HTTP {status}, got {int(resp.status_code)}: {body}",
    )
    check(
        isinstance(resp.parsed, model),
        f"{what}: body did not parse as {model.__name__} (got {type(resp.parsed).__name__}): {body}",
    )
    return resp.parsed


def expect_error(resp, status: int, what: str, code: str | None = None) -> ErrorBody:
    err = expect(resp, status, ErrorBody, what)
    if code is not None:
        check(err.code == code, f"{what}: expected error code {code!r}, got {err.code!r} ({err.message})")
    return err


class Run:
    def __init__(self, base_url: str, token: str, deadline_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        timeout = httpx.Timeout(75.0, connect=5.0)  # wait_job holds a request up to 60 s
        self.admin = AuthenticatedClient(base_url=self.base_url, token=token, timeout=timeout)
        self.anon = Client(base_url=self.base_url, timeout=timeout)
        self.deadline = time.monotonic() + deadline_s
        self.tag = f"contract-{uuid.uuid4().hex[:12]}"
        self.done: list[str] = []

    def ok(self, line: str) -> None:
        self.done.append(line)
        print(f"  ok  {line}", flush=True)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # -- helpers -----------------------------------------------------------------------------------

    def wait_finished(self, job_id: uuid.UUID, what: str, client=None) -> Job:
        """wait_job until the job is terminal (each call waits up to 20 s server-side)."""
        client = client or self.admin
        while True:
            left = self.remaining()
            check(left > 1, f"{what}: job {job_id} not finished before the deadline")
            resp = wait_job.sync_detailed(job_id, client=client, timeout_seconds=max(1, min(20, int(left) - 1)))
            job = expect(resp, 200, Job, f"wait_job({what})")
            check(job.id == job_id, f"wait_job({what}) returned job {job.id}, not {job_id}")
            if job.status in TERMINAL:
                return job

    def wait_status(self, job_id: uuid.UUID, statuses: set, what: str) -> Job:
        """Poll get_job until the job is in one of `statuses`."""
        while True:
            job = expect(get_job.sync_detailed(job_id, client=self.admin), 200, Job, f"get_job({what})")
            if job.status in statuses:
                return job
            check(job.status not in TERMINAL, f"{what}: job ended {job.status.value} while waiting for {statuses}")
            check(self.remaining() > 1, f"{what}: job {job_id} still {job.status.value} at the deadline")
            time.sleep(0.1)

    def event_types(self, job_id: uuid.UUID, what: str) -> list[EventType]:
        types: list[EventType] = []
        after = UNSET
        while True:
            page = expect(
                list_job_events.sync_detailed(job_id, client=self.admin, after=after, limit=100),
                200,
                EventPage,
                f"list_job_events({what})",
            )
            for ev in page.events:
                check(ev.job_id == job_id, f"list_job_events({what}): event {ev.id} of job {ev.job_id}")
                types.append(ev.type_)
            if not page.events or page.next_after is UNSET:
                return types
            after = page.next_after

    # -- the scenario ----------------------------------------------------------------------------

    def run(self) -> None:
        tags = ["contract", self.tag]

        # Open endpoints and authentication.
        health = healthz.sync_detailed(client=self.anon)
        check(int(health.status_code) == 200 and health.parsed is not None, f"healthz: {health.status_code}")
        expect_error(get_stats.sync_detailed(client=self.anon), 401, "get_stats without a key")
        bad = AuthenticatedClient(base_url=self.base_url, token="jq_not-a-real-key")
        expect_error(get_stats.sync_detailed(client=bad), 401, "get_stats with a bad key")
        self.ok("healthz open; no key / a bad key -> 401 ErrorBody")

        # One job of each kind.
        data = "data1"
        repeat = 100_000
        hash_job = expect(
            enqueue_hash.sync_detailed(client=self.admin, body=EnqueueHash(data=data, repeat=repeat, tags=tags)),
            202,
            Job,
            "enqueue_hash",
        )
        check(hash_job.kind == JobKind.HASH, f"enqueue_hash: kind {hash_job.kind}")
        check(
            hash_job.status in {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED},
            f"enqueue_hash: status {hash_job.status}",
        )
        check(set(tags) <= set(hash_job.tags), f"enqueue_hash: tags {hash_job.tags}")

        email_job = expect(
            enqueue_email.sync_detailed(
                client=self.admin,
                body=EnqueueEmail(to="ada@example.com", subject="Hello from the SDK", body="Sent by jobq.", tags=tags),
            ),
            202,
            Job,
            "enqueue_email",
        )
        check(email_job.kind == JobKind.EMAIL, f"enqueue_email: kind {email_job.kind}")

        idem = f"lr-{self.tag}"
        lr_body = EnqueueLongRunning(steps=3, step_duration_ms=50, tags=tags)
        lr_resp = enqueue_long_running.sync_detailed(client=self.admin, body=lr_body, idempotency_key=idem)
        lr_job = expect(lr_resp, 202, Job, "enqueue_long_running")
        check(lr_job.kind == JobKind.LONG_RUNNING, f"enqueue_long_running: kind {lr_job.kind}")
        replay = enqueue_long_running.sync_detailed(client=self.admin, body=lr_body, idempotency_key=idem)
        replayed = expect(replay, 202, Job, "enqueue_long_running replayed")
        check(replayed.id == lr_job.id, f"idempotent replay returned {replayed.id}, not {lr_job.id}")
        check(
            replay.headers.get("idempotent-replayed", "").lower() == "true",
            f"idempotent replay: Idempotent-Replayed header is {replay.headers.get('idempotent-replayed')!r}",
        )
        other = EnqueueLongRunning(steps=4, step_duration_ms=50, tags=tags)
        expect_error(
            enqueue_long_running.sync_detailed(client=self.admin, body=other, idempotency_key=idem),
            409,
            "same Idempotency-Key, other body",
        )
        self.ok(
            "enqueue_hash, enqueue_email, enqueue_long_running -> 202 Job (Idempotency-Key replay, 409 on a different body)"
        )

        # A batch: one of each kind; the long-running one cannot finish a step within its timeout
        # and has a single attempt, so it fails.
        raw = bytes(range(256)) * 4
        batch = expect(
            enqueue_batch.sync_detailed(
                client=self.admin,
                body=EnqueueBatch(
                    jobs=[
                        JobRequestEnqueueHash(
                            kind=JobRequestEnqueueHashKind.HASH,
                            data=Base64Data(base64=base64.b64encode(raw).decode()),
                            repeat=3,
                            algorithm=HashAlgorithm.SHA512,
                            tags=tags,
                        ),
                        JobRequestEnqueueEmail(
                            kind=JobRequestEnqueueEmailKind.EMAIL,
                            to="grace@example.com",
                            subject="Batch",
                            body="Second email.",
                            tags=tags,
                        ),
                        JobRequestEnqueueLongRunning(
                            kind=JobRequestEnqueueLongRunningKind.LONG_RUNNING,
                            steps=10,
                            step_duration_ms=100,
                            timeout_ms=100,
                            max_attempts=1,
                            tags=[*tags, "doomed"],
                        ),
                    ]
                ),
            ),
            202,
            JobList,
            "enqueue_batch",
        )
        check(len(batch.jobs) == 3, f"enqueue_batch: {len(batch.jobs)} jobs returned, not 3")
        b_hash, b_email, doomed = batch.jobs
        check(
            [j.kind for j in batch.jobs] == [JobKind.HASH, JobKind.EMAIL, JobKind.LONG_RUNNING],
            f"enqueue_batch: kinds {[j.kind for j in batch.jobs]}",
        )
        self.ok("enqueue_batch (hash/base64/sha512, email, long-running) -> 202 JobList in request order")

        # Wait for all of them and read the results.
        hash_done = self.wait_finished(hash_job.id, "hash")
        check(hash_done.status == JobStatus.SUCCEEDED, f"hash job {hash_done.status.value}: {hash_done.last_error}")
        res = hash_done.result
        check(isinstance(res, JobResultHashResult), f"hash job result is {type(res).__name__}")
        want = hashlib.sha256(data.encode() * repeat).hexdigest()
        check(res.digest_hex == want, f"hash digest {res.digest_hex} != sha256 computed here {want}")
        check(res.algorithm == HashAlgorithm.SHA256, f"hash algorithm {res.algorithm}")
        check(res.bytes_hashed == len(data) * repeat, f"bytes_hashed {res.bytes_hashed}")
        check(
            hash_done.finished_at is not UNSET and hash_done.started_at is not UNSET,
            "hash job: no started_at/finished_at",
        )

        b_hash_done = self.wait_finished(b_hash.id, "batch hash")
        check(
            b_hash_done.status == JobStatus.SUCCEEDED,
            f"batch hash job {b_hash_done.status.value}: {b_hash_done.last_error}",
        )
        res = b_hash_done.result
        check(isinstance(res, JobResultHashResult), f"batch hash result is {type(res).__name__}")
        want = hashlib.sha512(raw * 3).hexdigest()
        check(res.digest_hex == want, f"batch sha512 digest {res.digest_hex} != {want}")
        check(res.algorithm == HashAlgorithm.SHA512, f"batch hash algorithm {res.algorithm}")
        self.ok("hash results: digest_hex equals hashlib's SHA-256 (text) and SHA-512 (base64 input)")

        for job, what in ((email_job, "email"), (b_email, "batch email")):
            done = self.wait_finished(job.id, what)
            check(done.status == JobStatus.SUCCEEDED, f"{what} job {done.status.value}: {done.last_error}")
            check(isinstance(done.result, JobResultEmailResult), f"{what} result is {type(done.result).__name__}")
            check(done.result.message_id.strip() != "", f"{what}: empty message_id")
            check(done.attempt == 1, f"{what}: attempt {done.attempt}")
        self.ok("email results carry a message_id")

        lr_done = self.wait_finished(lr_job.id, "long-running")
        check(lr_done.status == JobStatus.SUCCEEDED, f"long-running job {lr_done.status.value}: {lr_done.last_error}")
        check(
            isinstance(lr_done.result, JobResultLongRunningResult),
            f"long-running result is {type(lr_done.result).__name__}",
        )
        check(lr_done.result.steps_completed == 3, f"steps_completed {lr_done.result.steps_completed}")
        check(lr_done.progress.done == 3 and lr_done.progress.total == 3, f"progress {lr_done.progress}")
        types = self.event_types(lr_job.id, "long-running")
        check(types[0] == EventType.QUEUED and types[-1] == EventType.SUCCEEDED, f"long-running events {types}")
        check(EventType.STARTED in types, f"long-running events {types}: no started")
        self.ok("long-running result and events (queued ... started ... succeeded)")

        # The failed job: find it by status, retry it.
        doomed_done = self.wait_finished(doomed.id, "doomed long-running")
        check(doomed_done.status == JobStatus.FAILED, f"doomed job {doomed_done.status.value}, expected failed")
        check(doomed_done.result is UNSET, "failed job has a result")
        check(
            isinstance(doomed_done.last_error, str) and "timed out" in doomed_done.last_error,
            f"failed job last_error {doomed_done.last_error!r}",
        )
        page = expect(
            list_jobs.sync_detailed(
                client=self.admin,
                status=[JobStatus.FAILED],
                kind=[JobKind.LONG_RUNNING],
                tag=[self.tag],
                limit=50,
            ),
            200,
            JobPage,
            "list_jobs(status=failed)",
        )
        check(
            [j.id for j in page.jobs] == [doomed.id], f"list_jobs(status=failed, tag): {[str(j.id) for j in page.jobs]}"
        )
        check(all(j.status == JobStatus.FAILED for j in page.jobs), "list_jobs(status=failed) returned other statuses")
        counts = expect(
            count_jobs.sync_detailed(client=self.admin, kind=[JobKind.LONG_RUNNING]),
            200,
            JobCounts,
            "count_jobs",
        )
        check(counts.total >= 2, f"count_jobs(kind=long_running).total = {counts.total}")

        retried = expect(retry_job.sync_detailed(doomed.id, client=self.admin), 200, Job, "retry_job")
        check(retried.id == doomed.id, "retry_job returned another job")
        check(retried.status not in TERMINAL, f"retry_job: status {retried.status.value}")
        again = self.wait_finished(doomed.id, "retried job")
        check(again.status == JobStatus.FAILED, f"retried job {again.status.value}, expected failed again")
        check(again.attempt == 1, f"retried job: attempt {again.attempt} (fresh attempt count expected)")
        types = self.event_types(doomed.id, "retried job")
        check(EventType.RETRIED in types, f"retried job events {types}: no retried")
        check(types.count(EventType.FAILED) == 2, f"retried job events {types}: expected two failed")
        expect_error(get_job.sync_detailed(uuid.uuid4(), client=self.admin), 404, "get_job of an unknown id")
        expect_error(retry_job.sync_detailed(hash_job.id, client=self.admin), 409, "retry_job of a succeeded job")
        self.ok(
            "failed job: last_error 'timed out', found by list_jobs(status=failed), retried (retried event), 404/409 as ErrorBody"
        )

        # Cancel a running long-running job.
        slow = expect(
            enqueue_long_running.sync_detailed(
                client=self.admin, body=EnqueueLongRunning(steps=600, step_duration_ms=100, tags=tags)
            ),
            202,
            Job,
            "enqueue_long_running (to cancel)",
        )
        self.wait_status(slow.id, {JobStatus.RUNNING}, "job to cancel")
        cancelled = expect(cancel_job.sync_detailed(slow.id, client=self.admin), 200, Job, "cancel_job")
        check(cancelled.status == JobStatus.CANCELLED, f"cancel_job: status {cancelled.status.value}")
        final = self.wait_finished(slow.id, "cancelled job")
        check(final.status == JobStatus.CANCELLED, f"cancelled job ended {final.status.value}")
        check(final.progress.done < 600, f"cancelled job ran all its steps ({final.progress.done})")
        expect_error(cancel_job.sync_detailed(slow.id, client=self.admin), 409, "cancel_job of a cancelled job")
        types = self.event_types(slow.id, "cancelled job")
        check(types[-1] == EventType.CANCELLED, f"cancelled job events end with {types[-1:]}")
        self.ok("cancel_job on a running long-running job -> cancelled, stops early; cancelling again -> 409")

        # API keys: a client key of another tenant, its limits, its revocation.
        tenant = f"t-{self.tag}"
        created = expect(
            create_key.sync_detailed(
                client=self.admin, body=CreateKey(name=f"sdk-{self.tag}", role=Role.CLIENT, tenant=tenant)
            ),
            201,
            CreatedKey,
            "create_key",
        )
        check(created.token.startswith("jq_"), "create_key: token does not start with jq_")
        check(created.key.role == Role.CLIENT and created.key.tenant == tenant, f"create_key: {created.key}")
        user = AuthenticatedClient(
            base_url=self.base_url, token=created.token, timeout=httpx.Timeout(75.0, connect=5.0)
        )
        mine = expect(
            enqueue_hash.sync_detailed(client=user, body=EnqueueHash(data="tenant", algorithm=HashAlgorithm.SHA224)),
            202,
            Job,
            "enqueue_hash with a client key",
        )
        mine_done = self.wait_finished(mine.id, "client key's hash", client=user)
        check(mine_done.status == JobStatus.SUCCEEDED, f"client key's job {mine_done.status.value}")
        check(
            mine_done.result.digest_hex == hashlib.sha224(b"tenant").hexdigest(),
            f"sha224 digest {mine_done.result.digest_hex}",
        )
        expect_error(get_job.sync_detailed(hash_job.id, client=user), 404, "another tenant's job with a client key")
        expect_error(retry_job.sync_detailed(mine.id, client=user), 403, "retry_job with a client key")
        expect_error(get_stats.sync_detailed(client=user), 403, "get_stats with a client key")
        revoked = revoke_key.sync_detailed(created.key.id, client=self.admin)
        info = expect(revoked, 200, KeyInfo, "revoke_key")
        check(info.revoked_at is not UNSET, "revoke_key: no revoked_at")
        expect_error(get_job.sync_detailed(mine.id, client=user), 401, "a revoked key")
        self.ok("API keys: client key enqueues/reads its tenant only, 403 for ops calls, 401 once revoked")

        # A schedule (yearly, so it does not fire): create, list, pause, resume, delete.
        sched = expect(
            create_schedule.sync_detailed(
                client=self.admin,
                body=CreateSchedule(
                    name=f"sdk-{self.tag}",
                    cron="0 0 1 1 *",
                    timezone=TimeZone.EUROPE_PARIS,
                    job=ScheduledJobScheduledHash(kind=ScheduledJobScheduledHashKind.HASH, data="tick", tags=tags),
                ),
            ),
            201,
            Schedule,
            "create_schedule",
        )
        check(
            isinstance(sched.job, ScheduledJobScheduledHash), f"create_schedule: job is {type(sched.job).__name__}"
        )
        check(sched.job.data == "tick" and sched.kind == JobKind.HASH, f"create_schedule: job {sched.job}")
        check(not sched.paused, "create_schedule: paused")
        listed = expect(list_schedules.sync_detailed(client=self.admin), 200, ScheduleList, "list_schedules")
        check(
            sched.id in [s.id for s in listed.schedules],
            f"list_schedules: the new schedule {sched.id} ({sched.tenant}/{sched.name}) is missing from "
            f"{[(str(s.id), s.tenant, s.name) for s in listed.schedules]}",
        )
        paused = expect(pause_schedule.sync_detailed(sched.id, client=self.admin), 200, Schedule, "pause_schedule")
        check(paused.paused, "pause_schedule: not paused")
        resumed = expect(resume_schedule.sync_detailed(sched.id, client=self.admin), 200, Schedule, "resume_schedule")
        check(not resumed.paused, "resume_schedule: still paused")
        gone = delete_schedule.sync_detailed(sched.id, client=self.admin)
        check(int(gone.status_code) == 204, f"delete_schedule: HTTP {int(gone.status_code)}")
        expect_error(delete_schedule.sync_detailed(sched.id, client=self.admin), 404, "delete_schedule again")
        self.ok("schedules: create (job read back as JobRequestEnqueueHash), list, pause, resume, delete, 404 after")

        stats = get_stats.sync_detailed(client=self.admin)
        check(int(stats.status_code) == 200 and stats.parsed is not None, f"get_stats: {stats.status_code}")
        self.ok("get_stats")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--token", required=True, help="an admin key")
    ap.add_argument("--deadline", type=float, default=90.0, help="seconds for the whole scenario")
    args = ap.parse_args()
    run = Run(args.base_url, args.token, args.deadline)
    t0 = time.monotonic()
    try:
        run.run()
    except CheckFailed as exc:
        print(f"lifecycle: FAIL: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 -- e.g. the SDK could not parse a response: a contract failure too
        import traceback

        traceback.print_exc()
        here = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__]
        where = f" at lifecycle.py:{here[-1].lineno} `{here[-1].line}`" if here else ""
        print(f"lifecycle: FAIL{where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if run.done:
            print(f"lifecycle: the last step that passed: {run.done[-1]}", file=sys.stderr)
        return 1
    print(f"lifecycle: {len(run.done)} steps passed in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
