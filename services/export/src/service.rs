//! The gRPC API: `compliance.export.v1.ComplianceExportService`.
//!
//! Every call: verify the token → read the state as of now ([`StateLog::sync`]) → check the
//! access rules for the token's company → act. Changes are commands appended to the state log;
//! the fold re-checks access when it applies them, so a command racing a revoke loses.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proto::v1 as pb;
use proto::v1::compliance_export_service_server::ComplianceExportService;
use storage::ObjectStore;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::access::{AccessState, Action, Denied};
use crate::auth::{Caller, Verifier};
use crate::convert::{job_to_proto, status_to_proto};
use crate::liveness::Liveness;
use crate::state::{
    Command, CompanyState, Job, JobProgress, JobStatus, Outcome, downloadable_archive,
};
use crate::statelog::StateLog;
use crate::validate::{page_size, page_start, spec_from_request};

/// Kept here for the callers that name it so; it lives in [`crate::convert`].
pub use crate::convert::timestamp;

/// The API's dependencies.
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) log: StateLog,
    /// Running jobs' progress, as their workers report it.
    pub(crate) liveness: Liveness,
    pub(crate) verifier: Verifier,
    /// Presigns download links (with the public endpoint when one is configured).
    pub(crate) link_store: Arc<dyn ObjectStore>,
    pub(crate) link_ttl: Duration,
    /// Ends open watches when the service stops.
    pub(crate) shutdown: archive::CancellationToken,
    /// Counts refusals by the fair-share limits (per-RPC counts are the tower layer's).
    pub(crate) metrics: crate::metrics::Metrics,
    /// The most exports a company may have waiting (put in each create for the fold).
    pub(crate) max_queued_per_company: u32,
    /// Open watches per admin on this replica.
    pub(crate) watches: crate::limits::WatchLimiter,
    /// The archive signing keys ListSigningKeys publishes.
    pub(crate) signing_keys: crate::signing_keys::SigningKeys,
    /// The most schedules (not deleted) a company may have (put in each create for the fold).
    pub(crate) max_schedules_per_company: u32,
}

impl Api {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.log.clock().now()
    }

    /// Verifies the caller, brings the state up to date and checks the access rules.
    pub(crate) async fn authorize<T>(
        &self,
        request: &Request<T>,
        action: Action,
    ) -> Result<Caller, Status> {
        let caller = self.verifier.verify_request(request)?;
        self.log.sync().await?;
        self.check_access(&caller, action)?;
        Ok(caller)
    }

    /// The access rules for `caller`, against the state as folded so far.
    fn check_access(&self, caller: &Caller, action: Action) -> Result<(), Status> {
        self.log
            .read(|state| match state.company(&caller.company_id) {
                Some(company) => company.access.authorize(caller, action),
                None => AccessState::default().authorize(caller, action),
            })
            .map_err(Denied::into_status)
    }

    pub(crate) async fn submit(
        &self,
        caller: &Caller,
        command: Command,
    ) -> Result<Outcome, Status> {
        match self
            .log
            .submit(&caller.company_id, &caller.admin_id, command)
            .await?
        {
            Outcome::Rejected(denied) => Err(denied.into_status()),
            outcome => Ok(outcome),
        }
    }

    pub(crate) fn with_company<R>(
        &self,
        company_id: &str,
        f: impl FnOnce(&CompanyState) -> R,
    ) -> Option<R> {
        self.log.read(|state| state.company(company_id).map(f))
    }

    fn job(&self, caller: &Caller, id: &str) -> Result<pb::ExportJob, Status> {
        let now = self.now();
        self.with_company(&caller.company_id, |company| {
            company
                .job(id)
                .map(|job| job_to_proto(company, job, self.progress(job), now))
        })
        .flatten()
        .ok_or_else(|| not_found(id))
    }

    /// A job's progress: for a running job, the newest its worker reported on the liveness
    /// channel; otherwise the one recorded when it finished.
    fn progress(&self, job: &Job) -> JobProgress {
        if job.stored_status() == JobStatus::InProgress {
            self.liveness
                .progress(&job.id, job.attempts)
                .unwrap_or(job.progress)
        } else {
            job.progress
        }
    }

    fn settings(&self, company_id: &str) -> pb::Settings {
        self.with_company(company_id, |c| c.access.enabled.clone())
            .flatten()
            .map_or_else(pb::Settings::default, |enabled| pb::Settings {
                enabled: true,
                enabled_at: Some(timestamp(enabled.at)),
                enabled_by: enabled.by,
            })
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "no export {id:?} in your company: list your exports (ListExports) for their ids"
    ))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::ExportJob, Status>> + Send>>;

#[tonic::async_trait]
impl ComplianceExportService for Api {
    async fn enable_exports(
        &self,
        request: Request<pb::EnableExportsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let caller = self.authorize(&request, Action::EnableExports).await?;
        self.submit(&caller, Command::Enable).await?;
        Ok(Response::new(self.settings(&caller.company_id)))
    }

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let caller = self.authorize(&request, Action::GetSettings).await?;
        Ok(Response::new(self.settings(&caller.company_id)))
    }

    async fn grant_access(
        &self,
        request: Request<pb::GrantAccessRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        let caller = self.authorize(&request, Action::GrantAccess).await?;
        let admin_id = request.get_ref().admin_id.trim().to_owned();
        if !event_model::is_safe_id(&admin_id) {
            return Err(Status::invalid_argument(format!(
                "admin_id {admin_id:?} is not a valid user id: give the admin's id as in \
                 the portal"
            )));
        }
        self.submit(
            &caller,
            Command::Grant {
                admin_id: admin_id.clone(),
            },
        )
        .await?;
        self.with_company(&caller.company_id, |c| {
            c.access.grants.get(&admin_id).cloned()
        })
        .flatten()
        .map(|grant| {
            Response::new(pb::Grant {
                admin_id: admin_id.clone(),
                granted_by: grant.by,
                granted_at: Some(timestamp(grant.at)),
            })
        })
        .ok_or_else(|| Status::internal("the grant was applied but is not in the state"))
    }

    async fn revoke_access(
        &self,
        request: Request<pb::RevokeAccessRequest>,
    ) -> Result<Response<pb::RevokeAccessResponse>, Status> {
        let caller = self.authorize(&request, Action::RevokeAccess).await?;
        let admin_id = request.get_ref().admin_id.trim().to_owned();
        if admin_id.is_empty() {
            return Err(Status::invalid_argument(
                "admin_id is empty: name the admin whose access to revoke",
            ));
        }
        self.submit(&caller, Command::Revoke { admin_id }).await?;
        Ok(Response::new(pb::RevokeAccessResponse {}))
    }

    async fn list_access(
        &self,
        request: Request<pb::ListAccessRequest>,
    ) -> Result<Response<pb::ListAccessResponse>, Status> {
        let caller = self.authorize(&request, Action::ListAccess).await?;
        let grants = self
            .with_company(&caller.company_id, |c| {
                c.access
                    .grants
                    .iter()
                    .map(|(admin_id, grant)| pb::Grant {
                        admin_id: admin_id.clone(),
                        granted_by: grant.by.clone(),
                        granted_at: Some(timestamp(grant.at)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(pb::ListAccessResponse { grants }))
    }

    async fn create_export(
        &self,
        request: Request<pb::CreateExportRequest>,
    ) -> Result<Response<pb::ExportJob>, Status> {
        let caller = self.authorize(&request, Action::CreateExport).await?;
        let body = request.get_ref();
        // The job's acceptance (its `created_at`) is what it waits for in the log (everything
        // published before it, `watermark.rs`): nothing is read from the events topic here.
        let spec = spec_from_request(&caller.company_id, body, self.now())?;
        let job_id = uuid::Uuid::new_v4().to_string();
        let outcome = self
            .submit(
                &caller,
                Command::CreateExport {
                    job_id: job_id.clone(),
                    spec,
                    requester_email: caller.email.clone(),
                    request_id: Some(body.request_id.clone()).filter(|k| !k.is_empty()),
                    max_queued: Some(self.max_queued_per_company),
                },
            )
            .await
            .inspect_err(|status| {
                if status.code() == tonic::Code::ResourceExhausted {
                    self.metrics
                        .limited
                        .with_label_values(&["queued_per_company"])
                        .inc();
                }
            })?;
        let id = match outcome {
            Outcome::Existing { job_id } => job_id,
            _ => job_id,
        };
        tracing::info!(company = %caller.company_id, job = %id, by = %caller.admin_id, "export requested");
        self.job(&caller, &id).map(Response::new)
    }

    async fn get_export(
        &self,
        request: Request<pb::GetExportRequest>,
    ) -> Result<Response<pb::ExportJob>, Status> {
        let caller = self.authorize(&request, Action::ReadExports).await?;
        self.job(&caller, &request.get_ref().id).map(Response::new)
    }

    async fn list_exports(
        &self,
        request: Request<pb::ListExportsRequest>,
    ) -> Result<Response<pb::ListExportsResponse>, Status> {
        let caller = self.authorize(&request, Action::ReadExports).await?;
        let body = request.get_ref();
        let size = page_size(body.page_size)?;
        let before = page_start(&body.page_token, "j")?;
        let mut wanted = BTreeSet::new();
        for raw in &body.statuses {
            match pb::ExportStatus::try_from(*raw) {
                Ok(pb::ExportStatus::Unspecified) | Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "statuses contains {raw}, which is not an export status: use \
                         ACCEPTED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED or EXPIRED"
                    )));
                }
                Ok(status) => {
                    wanted.insert(status as i32);
                }
            }
        }
        let now = self.now();
        let (jobs, next) = self
            .with_company(&caller.company_id, |company| {
                let mut page: Vec<pb::ExportJob> = Vec::new();
                let mut next = String::new();
                let mut last_seq = 0;
                for job in company.jobs_before(before).rev() {
                    if before.is_some_and(|b| job.seq >= b) {
                        continue;
                    }
                    let status = status_to_proto(job.status_at(now)) as i32;
                    if !wanted.is_empty() && !wanted.contains(&status) {
                        continue;
                    }
                    if page.len() == size {
                        // More remain: the next page starts below the last one returned.
                        next = format!("j{last_seq}");
                        break;
                    }
                    last_seq = job.seq;
                    page.push(job_to_proto(company, job, self.progress(job), now));
                }
                (page, next)
            })
            .unwrap_or_default();
        Ok(Response::new(pb::ListExportsResponse {
            jobs,
            next_page_token: next,
        }))
    }

    async fn cancel_export(
        &self,
        request: Request<pb::CancelExportRequest>,
    ) -> Result<Response<pb::ExportJob>, Status> {
        let caller = self.authorize(&request, Action::CancelExport).await?;
        let id = request.get_ref().id.clone();
        self.job(&caller, &id)?;
        self.submit(&caller, Command::CancelExport { job_id: id.clone() })
            .await?;
        tracing::info!(company = %caller.company_id, job = %id, by = %caller.admin_id, "export cancelled");
        self.job(&caller, &id).map(Response::new)
    }

    type WatchExportStream = WatchStream;

    async fn watch_export(
        &self,
        request: Request<pb::WatchExportRequest>,
    ) -> Result<Response<Self::WatchExportStream>, Status> {
        let caller = self.authorize(&request, Action::ReadExports).await?;
        let id = request.get_ref().id.clone();
        self.job(&caller, &id)?;
        // Held by the stream's task: freed however the watch ends.
        let permit = self
            .watches
            .acquire(&caller.company_id, &caller.admin_id)
            .map_err(|denied| {
                self.metrics
                    .limited
                    .with_label_values(&["watches_per_admin"])
                    .inc();
                denied.into_status()
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut changes = api.log.subscribe();
            let mut beats = api.liveness.subscribe();
            let mut last: Option<pb::ExportJob> = None;
            let send = |item: Result<pb::ExportJob, Status>| {
                let (tx, shutdown) = (tx.clone(), api.shutdown.clone());
                async move {
                    tokio::select! {
                        sent = tx.send(item) => sent.is_ok(),
                        () = shutdown.cancelled() => false,
                    }
                }
            };
            loop {
                // Access is checked at every update: a revoked admin's watch ends at once.
                let job = match api
                    .check_access(&caller, Action::ReadExports)
                    .and_then(|()| api.job(&caller, &id))
                {
                    Ok(job) => job,
                    Err(status) => {
                        send(Err(status)).await;
                        return;
                    }
                };
                let done = pb::ExportStatus::try_from(job.status).is_ok_and(|s| {
                    !matches!(s, pb::ExportStatus::Accepted | pb::ExportStatus::InProgress)
                });
                if last.as_ref() != Some(&job) {
                    last = Some(job.clone());
                    if !send(Ok(job)).await {
                        return;
                    }
                }
                if done {
                    return;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    changed = beats.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    () = tx.closed() => return,
                    () = api.shutdown.cancelled() => {
                        // Best effort, never waiting on a client that does not read.
                        let _ = tx.try_send(Err(Status::unavailable(
                            "the export service is restarting: watch again",
                        )));
                        return;
                    }
                }
            }
        });
        let stream: WatchStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(Response::new(stream))
    }

    async fn get_download_url(
        &self,
        request: Request<pb::GetDownloadUrlRequest>,
    ) -> Result<Response<pb::DownloadUrl>, Status> {
        let caller = self.authorize(&request, Action::GetDownloadUrl).await?;
        let id = request.get_ref().id.clone();
        let now = self.now();
        let job = self
            .with_company(&caller.company_id, |c| c.job(&id).cloned())
            .flatten()
            .ok_or_else(|| not_found(&id))?;
        let archive =
            downloadable_archive(&caller.company_id, &job, now).map_err(Denied::into_status)?;
        let ttl =
            chrono::Duration::from_std(self.link_ttl).unwrap_or_else(|_| chrono::Duration::days(7));
        let expires_at = (now + ttl).min(archive.expires_at);
        // Audited first: a link nobody recorded is never handed out.
        self.submit(
            &caller,
            Command::LinkIssued {
                job_id: id.clone(),
                expires_at,
            },
        )
        .await?;
        // Measured after the audit record: the URL never outlives the audited expiry.
        let lifetime = (expires_at - self.now())
            .to_std()
            .ok()
            .filter(|l| *l >= Duration::from_secs(1))
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "export {id} has just expired: request a new export"
                ))
            })?;
        let url = self
            .link_store
            .presign_get(&archive.key, lifetime)
            .await
            .map_err(|e| Status::unavailable(format!("presigning the link: {e}; retry")))?;
        tracing::info!(company = %caller.company_id, job = %id, by = %caller.admin_id, %expires_at, "download link issued");
        Ok(Response::new(pb::DownloadUrl {
            url,
            expires_at: Some(timestamp(expires_at)),
            size: archive.size,
            sha256: archive.sha256,
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = self.authorize(&request, Action::ListAuditEvents).await?;
        let body = request.get_ref();
        let size = page_size(body.page_size)?;
        let before = page_start(&body.page_token, "a")?;
        let (events, next) = self
            .with_company(&caller.company_id, |company| {
                let end = before.map_or(company.audit.len(), |b| {
                    usize::try_from(b).unwrap_or(0).min(company.audit.len())
                });
                let start = end.saturating_sub(size);
                let events = company.audit[start..end]
                    .iter()
                    .rev()
                    .map(|e| pb::AuditEvent {
                        id: e.id.clone(),
                        at: Some(timestamp(e.at)),
                        actor_id: e.actor.clone(),
                        action: e.action.to_owned(),
                        subject: e.subject.clone(),
                        details: e.details.clone().into_iter().collect(),
                    })
                    .collect();
                let next = if start > 0 {
                    format!("a{start}")
                } else {
                    String::new()
                };
                (events, next)
            })
            .unwrap_or_default();
        Ok(Response::new(pb::ListAuditEventsResponse {
            events,
            next_page_token: next,
        }))
    }

    // Scheduled exports: the logic is in `crate::schedule_api`.
    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.create_schedule_rpc(request).await.map(Response::new)
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.get_schedule_rpc(request).await.map(Response::new)
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        self.list_schedules_rpc(request).await.map(Response::new)
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let id = request.get_ref().schedule_id.clone();
        self.change_schedule_rpc(request, &id, |schedule_id| Command::PauseSchedule {
            schedule_id,
        })
        .await
        .map(Response::new)
    }

    async fn resume_schedule(
        &self,
        request: Request<pb::ResumeScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let id = request.get_ref().schedule_id.clone();
        self.change_schedule_rpc(request, &id, |schedule_id| Command::ResumeSchedule {
            schedule_id,
        })
        .await
        .map(Response::new)
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let id = request.get_ref().schedule_id.clone();
        self.change_schedule_rpc(request, &id, |schedule_id| Command::DeleteSchedule {
            schedule_id,
        })
        .await
        .map(Response::new)
    }

    async fn list_signing_keys(
        &self,
        request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        // Any administrator of a company with exports enabled (the proto's rule): the keys
        // are public, but the API is the company's.
        let caller = self.authorize(&request, Action::GetSettings).await?;
        if !self.settings(&caller.company_id).enabled {
            return Err(Status::failed_precondition(
                "compliance exports are not enabled for your company: an administrator must \
                 enable them first (EnableExports)",
            ));
        }
        Ok(Response::new(self.signing_keys.to_proto()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod on_the_memory_log {
        use std::sync::Arc;

        use jsonwebtoken::{EncodingKey, Header, encode};
        use storage::MemoryStore;
        use telemetry::CancellationToken;

        use super::*;
        use crate::auth::Claims;
        use crate::clock::SystemClock;
        use crate::liveness::{BEAT_VERSION, Beat, LivenessChannel, MemoryLiveness};
        use crate::state::SERVICE_ACTOR;
        use crate::statelog::{MemoryLog, RecordLog};

        const KEY: &str = "5e0b8d3a6f1c4e7b0a3d6f9c2e5b8a1d4f7c0e3b6a9d2f5c8e1b4a7d0c3f6e9b";

        /// A replica's API on the shared in-memory state log and liveness channel.
        async fn replica(log: &MemoryLog, channel: &MemoryLiveness) -> Api {
            let stop = CancellationToken::new();
            let records: Arc<dyn RecordLog> = Arc::new(log.clone());
            let state = StateLog::open(records, None, Arc::new(SystemClock), stop.clone())
                .await
                .unwrap();
            state.caught_up().await.unwrap();
            let channel: Arc<dyn LivenessChannel> = Arc::new(channel.clone());
            Api {
                log: state,
                liveness: Liveness::start(channel, stop.clone()),
                verifier: Verifier::hs256(KEY, "admin-portal", "compliance-exports").unwrap(),
                link_store: Arc::new(MemoryStore::new()),
                link_ttl: Duration::from_secs(3600),
                shutdown: stop,
                metrics: crate::metrics::Metrics::register(&prometheus::Registry::new()).unwrap(),
                max_queued_per_company: 3,
                watches: crate::limits::WatchLimiter::new(2),
                signing_keys: crate::signing_keys::SigningKeys::default(),
                max_schedules_per_company: 2,
            }
        }

        fn authed<T>(body: T) -> Request<T> {
            let claims = Claims {
                sub: "ann".into(),
                company_id: "acme".into(),
                role: "admin".into(),
                exp: u64::try_from(Utc::now().timestamp()).unwrap() + 600,
                iss: "admin-portal".into(),
                aud: "compliance-exports".into(),
                email: None,
            };
            let token = encode(
                &Header::default(),
                &claims,
                &EncodingKey::from_secret(KEY.as_bytes()),
            )
            .unwrap();
            let mut request = Request::new(body);
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            request
        }

        #[tokio::test]
        async fn a_running_exports_progress_reaches_every_replica() {
            let (log, channel) = (MemoryLog::new("export-state"), MemoryLiveness::default());
            let a = replica(&log, &channel).await;
            let b = replica(&log, &channel).await;
            a.enable_exports(authed(pb::EnableExportsRequest {}))
                .await
                .unwrap();
            let id = a
                .create_export(authed(pb::CreateExportRequest::default()))
                .await
                .unwrap()
                .into_inner()
                .id;
            let job = b
                .get_export(authed(pb::GetExportRequest { id: id.clone() }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(job.status, pb::ExportStatus::Accepted as i32);
            assert_eq!(job.queue_position, 1);
            // A worker (on a) claims it and reports progress on the liveness channel.
            let claim = Command::Claim {
                job_id: id.clone(),
                worker: "w".into(),
                lease_until: None,
                takes_over: None,
            };
            assert_eq!(
                a.log.submit("acme", SERVICE_ACTOR, claim).await.unwrap(),
                Outcome::Applied
            );
            let mut beats = b.liveness.subscribe();
            let beat = Beat {
                v: BEAT_VERSION,
                company_id: "acme".into(),
                job_id: id.clone(),
                worker: "w".into(),
                attempt: 1,
                at: Utc::now(),
                progress: JobProgress {
                    events_read: 1234,
                    files_written: 5,
                    bytes_written: 678,
                    percent: 40,
                    waiting_for_log: None,
                },
            };
            a.liveness.publish(&beat).await.unwrap();
            while b.liveness.progress(&id, 1).is_none() {
                beats.changed().await.unwrap();
            }
            // b shows it, though neither the beat nor its progress is in the state log.
            let job = b
                .get_export(authed(pb::GetExportRequest { id: id.clone() }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(job.status, pb::ExportStatus::InProgress as i32);
            let progress = job.progress.unwrap();
            assert_eq!((progress.events_read, progress.percent), (1234, 40));
            assert_eq!(
                log.end().await.unwrap(),
                3,
                "enable, create, claim: no heartbeat"
            );
        }

        #[tokio::test]
        async fn signing_keys_are_published_to_admins_once_exports_are_enabled() {
            use std::os::unix::fs::PermissionsExt;
            let (log, channel) = (MemoryLog::new("export-state"), MemoryLiveness::default());
            let mut a = replica(&log, &channel).await;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("key.pem");
            std::fs::write(
                &path,
                "-----BEGIN PRIVATE KEY-----\n\
                 MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                 -----END PRIVATE KEY-----\n",
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            a.signing_keys = crate::signing_keys::SigningKeys::load(&[path]).unwrap();
            let refused = a
                .list_signing_keys(authed(pb::ListSigningKeysRequest {}))
                .await
                .unwrap_err();
            assert_eq!(
                refused.code(),
                tonic::Code::FailedPrecondition,
                "{refused:?}"
            );
            a.enable_exports(authed(pb::EnableExportsRequest {}))
                .await
                .unwrap();
            let keys = a
                .list_signing_keys(authed(pb::ListSigningKeysRequest {}))
                .await
                .unwrap()
                .into_inner()
                .keys;
            assert_eq!(keys.len(), 1);
            assert!(keys[0].active && keys[0].algorithm == "Ed25519");
            assert!(
                keys[0]
                    .public_key_pem
                    .contains("MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE="),
                "{}",
                keys[0].public_key_pem
            );
        }

        #[tokio::test]
        async fn one_company_cannot_fill_the_queue_nor_one_admin_hold_every_watch() {
            let (log, channel) = (MemoryLog::new("export-state"), MemoryLiveness::default());
            let a = replica(&log, &channel).await; // 3 waiting per company, 2 watches per admin
            a.enable_exports(authed(pb::EnableExportsRequest {}))
                .await
                .unwrap();
            let mut ids = vec![];
            for _ in 0..3 {
                let job = a
                    .create_export(authed(pb::CreateExportRequest::default()))
                    .await
                    .unwrap();
                ids.push(job.into_inner().id);
            }
            let refused = a
                .create_export(authed(pb::CreateExportRequest::default()))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
            assert!(
                refused.message().contains("3 exports waiting"),
                "{refused:?}"
            );
            assert!(refused.message().contains("CancelExport"), "{refused:?}");
            // Cancelling one makes room.
            a.cancel_export(authed(pb::CancelExportRequest { id: ids[0].clone() }))
                .await
                .unwrap();
            a.create_export(authed(pb::CreateExportRequest::default()))
                .await
                .unwrap();

            let watch = |id: &str| a.watch_export(authed(pb::WatchExportRequest { id: id.into() }));
            let first = watch(&ids[1]).await.unwrap();
            let _second = watch(&ids[2]).await.unwrap();
            let refused = watch(&ids[1]).await.err().unwrap();
            assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
            // The client goes away: its watch's place is freed.
            drop(first);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while a.watches.open("acme", "ann") >= 2 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a dropped watch still holds its place after 10 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            watch(&ids[1]).await.unwrap();
        }

        /// Served the way `lib.rs` serves it: the one layer counts every call by method and
        /// code, errors refused before the handler ran and streams included.
        #[tokio::test]
        async fn every_call_is_counted_by_the_layer_with_its_code() {
            use proto::v1::compliance_export_service_client::ComplianceExportServiceClient;
            use proto::v1::compliance_export_service_server::ComplianceExportServiceServer;

            let (log, channel) = (MemoryLog::new("export-state"), MemoryLiveness::default());
            let api = replica(&log, &channel).await;
            let registry = prometheus::Registry::new();
            let metrics = crate::metrics::Metrics::register(&registry).unwrap();
            let layer = crate::rpc_metrics::RpcMetricsLayer::new(
                metrics.clone(),
                proto::v1::FILE_DESCRIPTOR_SET,
                crate::SERVICE_NAME,
            )
            .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = CancellationToken::new();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(tower::Layer::layer(
                        &layer,
                        ComplianceExportServiceServer::new(api),
                    ))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        stop.clone().cancelled_owned(),
                    ),
            );
            let mut client = ComplianceExportServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let refused = client
                .get_settings(pb::GetSettingsRequest {})
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            client
                .enable_exports(authed(pb::EnableExportsRequest {}))
                .await
                .unwrap();
            client
                .get_settings(authed(pb::GetSettingsRequest {}))
                .await
                .unwrap();
            let missing = client
                .get_export(authed(pb::GetExportRequest { id: "nope".into() }))
                .await
                .unwrap_err();
            assert_eq!(missing.code(), tonic::Code::NotFound);
            let id = client
                .create_export(authed(pb::CreateExportRequest::default()))
                .await
                .unwrap()
                .into_inner()
                .id;
            let mut watch = client
                .watch_export(authed(pb::WatchExportRequest { id }))
                .await
                .unwrap()
                .into_inner();
            assert!(watch.message().await.unwrap().is_some());

            let count =
                |method: &str, code: &str| metrics.rpcs.with_label_values(&[method, code]).get();
            assert_eq!(count("GetSettings", "Unauthenticated"), 1);
            assert_eq!(count("GetSettings", "Ok"), 1);
            assert_eq!(count("EnableExports", "Ok"), 1);
            assert_eq!(count("CreateExport", "Ok"), 1);
            assert_eq!(count("WatchExport", "Ok"), 1);
            let timed = metrics.rpc_seconds.with_label_values(&["GetSettings"]);
            assert_eq!(timed.get_sample_count(), 2);
            // As the ops endpoint shows it (and the real-stack tests look for it).
            let text = prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap();
            assert!(
                text.contains(r#"cce_export_rpcs_total{code="NotFound",method="GetExport"} 1"#),
                "{text}"
            );
            drop(watch);
            stop.cancel();
            server.await.unwrap().unwrap();
        }
    }
}
