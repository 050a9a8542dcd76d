//! `/v1/schedules`: recurring jobs (cron expression, time zone, a job to enqueue per tick).

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::auth::ApiKey;
use crate::api::body::{BodyLimit, JsonBody};
use crate::api::error::ApiError;
use crate::api::models::at;
use crate::api::requests::{JobRequest, ScheduledHash, ScheduledJob};
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
#[oai(deny_unknown_fields, example)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Unique per tenant: 1-100 letters, digits or `-_.`.
    #[oai(validator(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._-]{1,100}$"))]
    pub name: String,
    /// Cron expression: 5 fields, minute hour day-of-month month day-of-week (0 or 7 is
    /// Sunday), e.g. `0 9 * * 1-5` (weekdays at 9:00), or 6 with seconds first
    /// (`*/30 * * * * *`: every 30 s). Each field is a list of `*`, `n` or `a-b` (wrapping when
    /// a > b), each optionally `/step`. When both day fields are restricted, either one
    /// matching ticks (as in Vixie cron). An expression that never ticks (February 30) is
    /// accepted and has no `next_run_at`.
    #[oai(validator(
        max_length = 200,
        pattern = "^(?:(?:\\*|[0-5]?[0-9](?:-[0-5]?[0-9])?)(?:/[1-9][0-9]?)?(?:,(?:\\*|[0-5]?[0-9](?:-[0-5]?[0-9])?)(?:/[1-9][0-9]?)?)* )?(?:\\*|[0-5]?[0-9](?:-[0-5]?[0-9])?)(?:/[1-9][0-9]?)?(?:,(?:\\*|[0-5]?[0-9](?:-[0-5]?[0-9])?)(?:/[1-9][0-9]?)?)* (?:\\*|(?:[01]?[0-9]|2[0-3])(?:-(?:[01]?[0-9]|2[0-3]))?)(?:/[1-9][0-9]?)?(?:,(?:\\*|(?:[01]?[0-9]|2[0-3])(?:-(?:[01]?[0-9]|2[0-3]))?)(?:/[1-9][0-9]?)?)* (?:\\*|(?:0?[1-9]|[12][0-9]|3[01])(?:-(?:0?[1-9]|[12][0-9]|3[01]))?)(?:/[1-9][0-9]?)?(?:,(?:\\*|(?:0?[1-9]|[12][0-9]|3[01])(?:-(?:0?[1-9]|[12][0-9]|3[01]))?)(?:/[1-9][0-9]?)?)* (?:\\*|(?:0?[1-9]|1[0-2])(?:-(?:0?[1-9]|1[0-2]))?)(?:/[1-9][0-9]?)?(?:,(?:\\*|(?:0?[1-9]|1[0-2])(?:-(?:0?[1-9]|1[0-2]))?)(?:/[1-9][0-9]?)?)* (?:\\*|[0-7](?:-[0-7])?)(?:/[1-9][0-9]?)?(?:,(?:\\*|[0-7](?:-[0-7])?)(?:/[1-9][0-9]?)?)*$"
    ))]
    pub cron: String,
    /// IANA time zone of the expression; `UTC` when omitted.
    #[oai(skip_serializing_if_is_none)]
    #[serde(default, deserialize_with = "crate::api::body::present")]
    pub timezone: Option<TimeZone>,
    /// `run_once` (default) or `skip`.
    #[oai(skip_serializing_if_is_none)]
    #[serde(default, deserialize_with = "crate::api::body::present")]
    pub missed: Option<MissedTicks>,
    /// The tenant that owns the jobs (1-100 letters, digits or `-_.@`); the key's tenant when
    /// omitted.
    #[oai(
        validator(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._@-]{1,100}$"),
        skip_serializing_if_is_none
    )]
    #[serde(default, deserialize_with = "crate::api::body::present")]
    pub tenant: Option<String>,
    /// The job to enqueue at each tick (`kind` says which), with the options of any job
    /// except `run_at`/`delay_ms`: the ticks say when it runs.
    pub job: ScheduledJob,
}

/// An IANA time zone name, e.g. `Europe/Berlin` or `UTC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(String);

impl TryFrom<String> for TimeZone {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.parse::<chrono_tz::Tz>() {
            Ok(tz) if tz.name() == name => Ok(Self(name)),
            _ => Err(format!(
                "unknown time zone {name:?} (use an IANA name such as Europe/Berlin)"
            )),
        }
    }
}

impl From<TimeZone> for String {
    fn from(tz: TimeZone) -> String {
        tz.0
    }
}

impl poem_openapi::types::Type for TimeZone {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "TimeZone".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        poem_openapi::registry::MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| {
            poem_openapi::registry::MetaSchema {
                description: Some("An IANA time zone name, e.g. `Europe/Berlin` or `UTC`."),
                enum_items: chrono_tz::TZ_VARIANTS
                    .iter()
                    .map(|tz| serde_json::Value::String(tz.name().to_owned()))
                    .collect(),
                ..poem_openapi::registry::MetaSchema::new("string")
            }
        });
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ToJSON for TimeZone {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}

impl poem_openapi::types::ParseFromJSON for TimeZone {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value {
            Some(serde_json::Value::String(name)) => {
                Self::try_from(name).map_err(poem_openapi::types::ParseError::custom)
            }
            other => Err(poem_openapi::types::ParseError::expected_type(
                other.unwrap_or_default(),
            )),
        }
    }
}

impl BodyLimit for CreateSchedule {
    const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
}

/// A recurring job.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Schedule {
    /// The schedule's id.
    pub id: Uuid,
    /// Unique per tenant.
    pub name: String,
    /// The tenant that owns the jobs it enqueues.
    pub tenant: String,
    /// The cron expression, as given (see `create_schedule`).
    pub cron: String,
    /// IANA time zone the expression is read in, e.g. `Europe/Berlin` or `UTC`.
    pub timezone: String,
    /// The kind of the job it enqueues.
    pub kind: JobKind,
    /// What happens to ticks missed while no jobq process ran.
    pub missed: MissedTicks,
    /// Whether the schedule is paused (no jobs are enqueued for its ticks).
    pub paused: bool,
    /// The next tick; absent when the expression never ticks again.
    #[oai(skip_serializing_if_is_none)]
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last tick a job was enqueued for.
    #[oai(skip_serializing_if_is_none)]
    pub last_run_at: Option<DateTime<Utc>>,
    /// The name of the key that created it.
    pub created_by: String,
    /// When it was created (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// The job it enqueues at each tick (`kind` says which).
    pub job: ScheduledJob,
}

/// Every schedule the key may see.
#[derive(Debug, Object)]
#[oai(example)]
pub struct ScheduleList {
    /// The schedules, ordered by tenant and name.
    pub schedules: Vec<Schedule>,
}

impl Example for CreateSchedule {
    /// A hash job at 9:00 on weekdays, Berlin time.
    fn example() -> Self {
        CreateSchedule {
            name: "weekday-digest".to_owned(),
            cron: "0 9 * * 1-5".to_owned(),
            timezone: Some(TimeZone("Europe/Berlin".to_owned())),
            missed: Some(MissedTicks::RunOnce),
            tenant: None,
            job: ScheduledJob::Hash(ScheduledHash::example()),
        }
    }
}

impl Example for Schedule {
    /// The schedule of `CreateSchedule`'s example, after its first tick.
    fn example() -> Self {
        Schedule {
            id: Uuid::from_u128(0x019bc0e8_5a21_7c44_9f0e_3b7d2a6c8e91),
            name: "weekday-digest".to_owned(),
            tenant: "default".to_owned(),
            cron: "0 9 * * 1-5".to_owned(),
            timezone: "Europe/Berlin".to_owned(),
            kind: JobKind::Hash,
            missed: MissedTicks::RunOnce,
            paused: false,
            next_run_at: Some(at("2026-01-16T08:00:00Z")),
            last_run_at: Some(at("2026-01-15T08:00:00Z")),
            created_by: "ops-console".to_owned(),
            created_at: at("2026-01-14T16:20:00Z"),
            job: ScheduledJob::Hash(ScheduledHash::example()),
        }
    }
}

impl Example for ScheduleList {
    fn example() -> Self {
        ScheduleList {
            schedules: vec![Schedule::example()],
        }
    }
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
            job: stored_job(row.job).map_err(|_| corrupt("job"))?,
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

/// A schedule's stored job (written by `create_schedule`; nulls of older rows are dropped).
fn stored_job(mut job: serde_json::Value) -> Result<ScheduledJob, serde_json::Error> {
    if let Some(fields) = job.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    serde_json::from_value(job)
}

/// The job a schedule enqueues at a tick, checked exactly as the API checks a request.
pub fn job_of(schedule: &ScheduleRow, config: &ApiConfig) -> Result<EnqueueRequest, String> {
    let request: JobRequest = stored_job(schedule.job.clone())
        .map_err(|e| e.to_string())?
        .into();
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
        let next = match Cadence::parse(&schedule.cron, &schedule.timezone) {
            Ok(c) => c.next_after(Utc::now()),
            Err(_) => schedule.next_run_at,
        };
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
        let timezone = req.timezone.map_or_else(|| "UTC".to_owned(), String::from);
        let cadence = Cadence::parse(&req.cron, &timezone)?;
        let tenant = req.tenant.unwrap_or_else(|| who.tenant.clone());
        if !crate::auth::valid_label(&tenant) {
            return Err(ApiError::validation(
                "tenant",
                "1-100 letters, digits or -_.@",
            ));
        }
        let job_json = serde_json::to_value(&req.job).map_err(|e| ApiError::internal(&e))?;
        let request: JobRequest = req.job.into();
        let parsed = request
            .parse(self.config.hash_max_input_bytes)
            .map_err(|e| crate::api::requests::at_field("job", e))?;
        JobOptions::parse(
            &parsed.options,
            self.config.default_max_attempts,
            Utc::now(),
        )
        .map_err(|e| ApiError::validation(&format!("job.{}", e.field), e.message))?;
        let next = cadence.next_after(Utc::now());
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
    ///
    /// Every schedule of every tenant, paused ones included, ordered by tenant and name, each
    /// with its job and its next tick. Needs the `ops` role (403 otherwise).
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
    ///
    /// No jobs are enqueued for its ticks until it is resumed (jobs it already enqueued are not
    /// affected); ticks that pass meanwhile are not made up. Idempotent: pausing a paused
    /// schedule returns it unchanged. Unknown id: 404. Needs the `ops` role (403 otherwise).
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
    ///
    /// The schedule enqueues no more jobs; the jobs it already enqueued stay, and run. Answers
    /// 204 with no body; a schedule that does not exist (or was already deleted): 404. Needs
    /// the `ops` role (403 otherwise).
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
