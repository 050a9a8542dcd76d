//! `/v1/schedules`: recurring jobs (cron expression, time zone, a job to enqueue per tick).

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::auth::ApiKey;
use crate::api::body::{BodyLimit, JsonBody};
use crate::api::error::ApiError;
use crate::api::requests::JobRequest;
use crate::auth::{Principal, Role};
use crate::config::ApiConfig;
use crate::domain::{JobKind, JobOptions};
use crate::lifecycle::EnqueueRequest;
use crate::lifecycle::schedules::Cadence;
use crate::store::{
    self,
    schedules::{NewSchedule, ScheduleRow},
};

pub struct SchedulesApi {
    pub pool: PgPool,
    pub config: ApiConfig,
}

/// What to do with ticks missed while no jobq process ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    /// One job for all the missed ticks together.
    #[default]
    RunOnce,
    /// No job for missed ticks.
    Skip,
}

impl MissedTicks {
    fn as_str(self) -> &'static str {
        match self {
            MissedTicks::RunOnce => "run_once",
            MissedTicks::Skip => "skip",
        }
    }
}

/// A new recurring job.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Unique per tenant: 1-100 letters, digits or `-_.`.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: String,
    /// Cron expression: 5 fields (`0 9 * * 1-5`: weekdays at 9:00) or 6 with seconds first
    /// (`*/30 * * * * *`: every 30 s).
    #[oai(validator(min_length = 1, max_length = 200))]
    pub cron: String,
    /// IANA time zone of the expression, `UTC` when omitted.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub timezone: Option<String>,
    /// `run_once` (default) or `skip`.
    pub missed: Option<MissedTicks>,
    /// The tenant that owns the jobs; the key's tenant when omitted.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub tenant: Option<String>,
    /// The job to enqueue at each tick, as for `enqueue_batch` (`run_at`/`delay_ms` not allowed).
    pub job: JobRequest,
}

impl BodyLimit for CreateSchedule {
    const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
}

/// A recurring job.
#[derive(Debug, Object)]
pub struct Schedule {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
    pub cron: String,
    pub timezone: String,
    pub kind: JobKind,
    pub missed: MissedTicks,
    pub paused: bool,
    /// The next tick.
    pub next_run_at: DateTime<Utc>,
    /// The last tick a job was enqueued for.
    #[oai(skip_serializing_if_is_none)]
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub job: JobRequest,
}

/// Every schedule the key may see.
#[derive(Debug, Object)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

#[derive(ApiResponse)]
pub enum CreateScheduleResponse {
    /// The schedule was created.
    #[oai(status = 201)]
    Created(Json<Schedule>),
}

#[derive(ApiResponse)]
pub enum DeleteScheduleResponse {
    /// The schedule was deleted; jobs it made stay.
    #[oai(status = 204)]
    Deleted,
}

impl TryFrom<ScheduleRow> for Schedule {
    type Error = ApiError;

    fn try_from(row: ScheduleRow) -> Result<Self, ApiError> {
        let corrupt =
            |what: &str| ApiError::internal(&format!("stored schedule {what} is invalid"));
        Ok(Schedule {
            id: row.id,
            kind: JobKind::parse(&row.kind).ok_or_else(|| corrupt("kind"))?,
            missed: if row.missed == "skip" {
                MissedTicks::Skip
            } else {
                MissedTicks::RunOnce
            },
            job: serde_json::from_value(row.job).map_err(|_| corrupt("job"))?,
            name: row.name,
            tenant: row.tenant,
            cron: row.cron,
            timezone: row.timezone,
            paused: row.paused,
            next_run_at: row.next_run_at,
            last_run_at: row.last_run_at,
            created_by: row.created_by,
            created_at: row.created_at,
        })
    }
}

/// The job a schedule enqueues at a tick, checked exactly as the API checks a request.
pub fn job_of(schedule: &ScheduleRow, config: &ApiConfig) -> Result<EnqueueRequest, String> {
    let request: JobRequest =
        serde_json::from_value(schedule.job.clone()).map_err(|e| e.to_string())?;
    let parsed = request
        .parse(config.hash_max_input_bytes)
        .map_err(|e| format!("{e:?}"))?;
    let options = JobOptions::parse(&parsed.options, config.default_max_attempts, Utc::now())
        .map_err(|e| e.to_string())?;
    Ok(EnqueueRequest {
        kind: parsed.kind,
        payload: parsed.payload,
        progress_total: parsed.progress_total,
        options,
        owner: schedule.tenant.clone(),
        idempotency_key: None,
        origin: None,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl SchedulesApi {
    async fn visible(&self, who: &Principal, id: Uuid) -> Result<ScheduleRow, ApiError> {
        store::schedules::get(&self.pool, id)
            .await?
            .filter(|s| who.may_see(&s.tenant))
            .ok_or_else(|| ApiError::not_found("schedule", "id"))
    }

    async fn set_paused(
        &self,
        auth: &ApiKey,
        id: Uuid,
        paused: bool,
    ) -> Result<Json<Schedule>, ApiError> {
        let who = auth.require(Role::Ops)?;
        let schedule = self.visible(who, id).await?;
        let next = Cadence::parse(&schedule.cron, &schedule.timezone)
            .ok()
            .and_then(|c| c.next_after(Utc::now()))
            .unwrap_or(schedule.next_run_at);
        let row = store::schedules::set_paused(&self.pool, id, paused, next)
            .await?
            .ok_or_else(|| ApiError::not_found("schedule", "id"))?;
        Ok(Json(row.try_into()?))
    }
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Schedules")]
impl SchedulesApi {
    /// Create a schedule
    ///
    /// Enqueues `job` at every tick of `cron` in `timezone`: exactly one job per tick, however
    /// many jobq processes run.
    #[oai(path = "/schedules", method = "post", operation_id = "create_schedule")]
    async fn create_schedule(
        &self,
        auth: ApiKey,
        body: JsonBody<CreateSchedule>,
    ) -> Result<CreateScheduleResponse, ApiError> {
        let who = auth.require(Role::Ops)?;
        let req = body.0;
        if !valid_name(&req.name) {
            return Err(ApiError::validation("name", "1-100 letters, digits or -_."));
        }
        let timezone = req.timezone.unwrap_or_else(|| "UTC".to_owned());
        let cadence = Cadence::parse(&req.cron, &timezone)?;
        let tenant = req.tenant.unwrap_or_else(|| who.tenant.clone());
        if !crate::auth::valid_label(&tenant) {
            return Err(ApiError::validation(
                "tenant",
                "1-100 letters, digits or -_.@",
            ));
        }
        let job_json = serde_json::to_value(&req.job).map_err(|e| ApiError::internal(&e))?;
        let parsed = req
            .job
            .parse(self.config.hash_max_input_bytes)
            .map_err(|e| crate::api::requests::at_field("job", e))?;
        if parsed.options.run_at.is_some() || parsed.options.delay_ms.is_some() {
            return Err(ApiError::validation(
                "job.run_at",
                "a schedule's job runs at its ticks: no run_at or delay_ms",
            ));
        }
        JobOptions::parse(
            &parsed.options,
            self.config.default_max_attempts,
            Utc::now(),
        )
        .map_err(|e| ApiError::validation(&format!("job.{}", e.field), e.message))?;
        let next = cadence
            .next_after(Utc::now())
            .ok_or_else(|| ApiError::validation("cron", "the expression never ticks again"))?;
        let row = store::schedules::insert(
            &self.pool,
            &NewSchedule {
                id: Uuid::now_v7(),
                name: &req.name,
                tenant: &tenant,
                cron: &req.cron,
                timezone: &timezone,
                kind: parsed.kind.as_str(),
                job: &job_json,
                missed: req.missed.unwrap_or_default().as_str(),
                next_run_at: next,
                created_by: &who.name,
            },
        )
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "schedule_exists",
                "the tenant already has a schedule with this name",
                Some("name"),
            )
        })?;
        Ok(CreateScheduleResponse::Created(Json(row.try_into()?)))
    }

    /// List schedules
    #[oai(path = "/schedules", method = "get", operation_id = "list_schedules")]
    async fn list_schedules(&self, auth: ApiKey) -> Result<Json<ScheduleList>, ApiError> {
        let who = auth.require(Role::Ops)?;
        let schedules = store::schedules::list(&self.pool, who.tenant_scope())
            .await?
            .into_iter()
            .map(Schedule::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Json(ScheduleList { schedules }))
    }

    /// Pause a schedule
    #[oai(
        path = "/schedules/:id/pause",
        method = "post",
        operation_id = "pause_schedule"
    )]
    async fn pause_schedule(
        &self,
        auth: ApiKey,
        /// The schedule's id.
        id: Path<Uuid>,
    ) -> Result<Json<Schedule>, ApiError> {
        self.set_paused(&auth, id.0, true).await
    }

    /// Resume a schedule
    ///
    /// It continues from its next tick after now (ticks while paused are not made up).
    #[oai(
        path = "/schedules/:id/resume",
        method = "post",
        operation_id = "resume_schedule"
    )]
    async fn resume_schedule(
        &self,
        auth: ApiKey,
        /// The schedule's id.
        id: Path<Uuid>,
    ) -> Result<Json<Schedule>, ApiError> {
        self.set_paused(&auth, id.0, false).await
    }

    /// Delete a schedule
    #[oai(
        path = "/schedules/:id",
        method = "delete",
        operation_id = "delete_schedule"
    )]
    async fn delete_schedule(
        &self,
        auth: ApiKey,
        /// The schedule's id.
        id: Path<Uuid>,
    ) -> Result<DeleteScheduleResponse, ApiError> {
        let who = auth.require(Role::Ops)?;
        self.visible(who, id.0).await?;
        store::schedules::delete(&self.pool, id.0).await?;
        Ok(DeleteScheduleResponse::Deleted)
    }
}
