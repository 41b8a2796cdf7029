//! A missing role pauses, it does not burn: a `403` pauses the kind of work that met it in that
//! environment (every replica's claims skip it: the pause is in the database), no attempt is used,
//! and the role is probed again without billing every `pipeline.role_probe_interval` until it is
//! granted; then the work resumes by itself.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::FutureExt as _;
use mint_client::{Operation, Role};
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::clock::delta;
use crate::model::{Execution, Job, JobKind, WorkPause};
use crate::roles::{self, RoleProbe};
use crate::store::{JobDisposition, StepOutcome};

impl Pipeline {
    /// Pauses the job's kind of work in its environment; the job waits (no attempt used) until the
    /// pause is lifted. None if the pause cannot be recorded (the caller delays the job instead).
    pub(super) async fn pause_for_missing_role(
        &self,
        job: &Job,
        execution: &Execution,
        role: Role,
        operation: Operation,
        error: &str,
    ) -> Option<StepOutcome> {
        let now = self.clock.now();
        let pause = WorkPause {
            environment: execution.environment.clone(),
            kind: job.kind,
            role: role.to_string(),
            operation: operation.name().to_owned(),
            detail: error.to_owned(),
            since: now,
            probed_at: None,
            next_probe_at: now + delta(self.config.role_probe_interval),
        };
        if let Err(failure) = self.store.pause_work(&pause).await {
            tracing::error!(
                error = format!("{failure:#}"),
                "cannot record the pause for a missing role"
            );
            return None;
        }
        tracing::error!(
            environment = execution.environment,
            role = %role,
            kind = job.kind.as_str(),
            error,
            "the API client lacks a role: this work is paused in this environment until it is granted"
        );
        Some(
            StepOutcome::done()
                .with_job(JobDisposition::Retry {
                    // Held by the pause, not by its time: it runs as soon as the pause is lifted.
                    run_at: now,
                    error: Some(error.to_owned()),
                    counts: false,
                    priority: None,
                })
                .event(
                    "paused",
                    serde_json::json!({
                        "kind": job.kind.as_str(),
                        "role": role.to_string(),
                        "operation": operation.name(),
                    }),
                ),
        )
    }

    /// Probes (without billing) every missing role whose probe is due and that this replica
    /// claims; lifts the pauses of those found granted. Answers how many pauses were lifted.
    pub async fn probe_paused_roles(&self) -> anyhow::Result<u64> {
        let now = self.clock.now();
        let due: BTreeSet<(String, String)> = self
            .store
            .work_pauses()
            .await?
            .into_iter()
            .filter(|pause| pause.next_probe_at <= now)
            .map(|pause| (pause.environment, pause.role))
            .collect();
        let mut lifted = 0;
        for (environment, role_name) in due {
            let Some(role) = roles::ROLES
                .into_iter()
                .find(|r| r.to_string() == role_name)
            else {
                continue;
            };
            let next = now + delta(self.config.role_probe_interval);
            if !self
                .store
                .claim_role_probe(&environment, &role_name, now, next)
                .await?
            {
                continue;
            }
            lifted += self.probe_and_apply(&environment, role, &[]).await?;
        }
        Ok(lifted)
    }

    /// Probes every role of every environment (what `serve` does at start): a missing role pauses
    /// the work that needs it, a present one lifts any pause it had. Answers the pauses lifted.
    pub async fn probe_all_roles(&self) -> anyhow::Result<u64> {
        let mut lifted = 0;
        let environments: Vec<String> = self.clients.iter().map(|(name, _)| name.clone()).collect();
        for environment in environments {
            for role in roles::ROLES {
                lifted += self
                    .probe_and_apply(&environment, role, roles::kinds_needing(role))
                    .await?;
            }
        }
        Ok(lifted)
    }

    /// Probes `role` in `environment`; when it is missing, pauses `kinds` there (besides what is
    /// paused already); when present, lifts its pauses.
    async fn probe_and_apply(
        &self,
        environment: &str,
        role: Role,
        kinds: &[JobKind],
    ) -> anyhow::Result<u64> {
        let client = self.clients.get(environment)?;
        let probe = roles::probe_id("mintgate-role-probe");
        match roles::probe(client, role, &probe).await {
            RoleProbe::Present | RoleProbe::Succeeded => {
                let lifted = self
                    .store
                    .lift_pauses(environment, &role.to_string())
                    .await?;
                if lifted > 0 {
                    tracing::info!(
                        environment,
                        role = %role,
                        "the role is granted again: the paused work resumes"
                    );
                    self.wake.notify_waiters();
                }
                Ok(lifted)
            }
            RoleProbe::Missing(error) => {
                let now = self.clock.now();
                for kind in kinds {
                    let pause = WorkPause {
                        environment: environment.to_owned(),
                        kind: *kind,
                        role: role.to_string(),
                        operation: probe_operation(role).name().to_owned(),
                        detail: error.to_string(),
                        since: now,
                        probed_at: Some(now),
                        next_probe_at: now + delta(self.config.role_probe_interval),
                    };
                    self.store.pause_work(&pause).await?;
                }
                tracing::error!(
                    environment,
                    role = %role,
                    error = %error,
                    "the API client lacks a role; the work that needs it stays paused"
                );
                Ok(0)
            }
            RoleProbe::Unknown(error) => {
                tracing::warn!(
                    environment,
                    role = %role,
                    error = %error,
                    "could not probe a role; trying again later"
                );
                Ok(0)
            }
        }
    }

    /// Probes the roles at start, then the missing ones whenever their probe is due, until
    /// `shutdown` (one of `serve`'s tasks).
    pub async fn run_role_prober(self: Arc<Self>, at_start: bool, shutdown: CancellationToken) {
        if at_start && let Err(error) = self.probe_all_roles().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "probing the roles at start failed"
            );
        }
        loop {
            // Like the workers, the prober outlives a panic (a bug) in one round.
            match std::panic::AssertUnwindSafe(self.probe_paused_roles())
                .catch_unwind()
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(error = format!("{error:#}"), "probing paused roles failed");
                }
                Err(_) => tracing::error!("probing paused roles panicked; trying again later"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.idle_wait) => {}
            }
        }
    }
}

/// The call a probe of `role` makes.
fn probe_operation(role: Role) -> Operation {
    match role {
        Role::FlowViewer => Operation::GetInstance,
        Role::FlowEditor => Operation::StartInstance,
        Role::FlowInstanceDownload => Operation::ResultFile,
    }
}
