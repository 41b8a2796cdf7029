//! The downloader's step: stream a finished instance's result file into the archive, verify it and
//! record it, while holding (and renewing) the job's lease.

use std::time::Instant;

use mint_client::DownloadOptions;

use super::{Failure, MINT_RETENTION, Pipeline, StepResult, classify, keep_lease};
use crate::archive::Manifest;
use crate::clock::delta;
use crate::model::{Execution, ExecutionState, Job, Lease};
use crate::store::{ExecutionPatch, JobDisposition, StepOutcome};

pub(super) async fn step(
    pipeline: &Pipeline,
    job: &Job,
    lease: &Lease,
    execution: &Execution,
) -> StepResult {
    if !matches!(
        execution.state,
        ExecutionState::Finished | ExecutionState::Downloading
    ) {
        // Archived already (never download twice), or not finished.
        return Ok(StepOutcome::done());
    }
    let Some(instance_id) = &execution.instance_id else {
        return Ok(StepOutcome::done());
    };
    let instance = instance_id.as_str();
    let now = pipeline.clock.now();
    let finished_at = execution.finished_at.unwrap_or(now);
    let deadline = execution
        .deadline_at
        .unwrap_or(finished_at + delta(MINT_RETENTION));

    // A download that completed before a crash is adopted, not repeated.
    if let Some(manifest) = pipeline.archive.existing(instance, finished_at).await? {
        tracing::info!(
            location = manifest.location,
            "result already archived; adopting it"
        );
        return Ok(archived(execution, &manifest, "adopted"));
    }
    if now > deadline {
        crate::metrics::execution_ended("expired", "deleted_by_mint");
        return Ok(expired(execution));
    }

    pipeline
        .store
        .patch_under_lease(
            lease,
            execution.id,
            ExecutionPatch::state(ExecutionState::Downloading),
            now,
        )
        .await?;

    let client = pipeline.client_for(execution)?.at(job.priority.to_client());
    let path = pipeline.archive.staging_path(instance, finished_at).await?;
    let started = Instant::now();
    let options = DownloadOptions::default();
    let download = client.download_result_to_path(instance_id, &path, &options);
    let result = tokio::select! {
        result = download => result,
        lost = keep_lease(pipeline, lease) => return Err(lost),
    };
    let download = match result {
        Ok(download) => download,
        Err(mint_client::Error::Expired { .. } | mint_client::Error::NotFound { .. }) => {
            crate::metrics::execution_ended("expired", "deleted_by_mint");
            return Ok(expired(execution));
        }
        Err(error @ mint_client::Error::NotReady { .. }) => {
            return Err(Failure::Delay {
                after: pipeline.config.poll_interval_min,
                error: error.to_string(),
            }
            .into());
        }
        Err(error) => return Err(classify(&error, job.attempts).into()),
    };
    crate::metrics::download_finished(download.bytes, started.elapsed());
    crate::metrics::download_throughput(download.bytes, started.elapsed());
    let manifest = Manifest {
        execution_id: execution.id.to_string(),
        environment: execution.environment.clone(),
        flow_id: execution.flow_id.to_string(),
        instance_id: instance.to_owned(),
        started_at: execution.started_at,
        finished_at: execution.finished_at,
        deadline_at: Some(deadline),
        archived_at: pipeline.clock.now(),
        bytes: download.bytes,
        sha256: download.sha256.clone(),
        location: String::new(),
    };
    let location = pipeline.archive.commit(&path, manifest.clone()).await?;
    tracing::info!(
        location,
        bytes = download.bytes,
        sha256 = download.sha256,
        "result archived"
    );
    let manifest = Manifest {
        location,
        ..manifest
    };
    Ok(archived(execution, &manifest, "downloaded"))
}

fn archived(execution: &Execution, manifest: &Manifest, how: &str) -> StepOutcome {
    crate::metrics::execution_ended("archived", how_label(how));
    StepOutcome::done()
        .with_patch(ExecutionPatch {
            state: Some(ExecutionState::Archived),
            archived_at: Some(manifest.archived_at),
            archive_path: Some(manifest.location.clone()),
            sha256: Some(manifest.sha256.clone()),
            bytes: Some(i64::try_from(manifest.bytes).unwrap_or(i64::MAX)),
            ..ExecutionPatch::default()
        })
        .event(
            "archived",
            serde_json::json!({
                "how": how,
                "location": manifest.location,
                "sha256": manifest.sha256,
                "bytes": manifest.bytes,
                "executionId": execution.id,
            }),
        )
}

fn how_label(how: &str) -> &'static str {
    if how == "adopted" {
        "adopted"
    } else {
        "downloaded"
    }
}

fn expired(execution: &Execution) -> StepOutcome {
    tracing::error!(
        execution_id = %execution.id,
        "Mint deleted the instance before its result was archived"
    );
    StepOutcome::done()
        .with_patch(ExecutionPatch {
            state: Some(ExecutionState::Expired),
            failure_reason: Some(
                "Mint deleted the instance before its result was archived".to_owned(),
            ),
            ..ExecutionPatch::default()
        })
        .with_job(JobDisposition::Done)
        .event("expired", serde_json::json!({}))
}
