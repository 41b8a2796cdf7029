//! The downloader's step: stream a finished instance's result file into the archive, verify it and
//! record it, while holding (and renewing) the job's lease.

use std::time::Instant;

use mint_client::DownloadOptions;

use super::{Failure, MINT_RETENTION, Pipeline, StepResult, classify, keep_lease, on_not_found};
use crate::archive::{Manifest, UploadMeta};
use crate::clock::delta;
use crate::model::{Execution, ExecutionState, Job, Lease};
use crate::store::{ExecutionPatch, StepOutcome};

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
    // (Reading it back may take a while: the lease is held meanwhile.)
    let existing = tokio::select! {
        found = pipeline.archive.existing(instance, finished_at) => found?,
        lost = keep_lease(pipeline, lease) => return Err(lost),
    };
    if let Some(manifest) = existing {
        tracing::info!(
            location = manifest.location,
            "result already archived; adopting it"
        );
        return Ok(archived(execution, &manifest, "adopted"));
    }
    // Past the deadline the download is tried all the same: only Mint's 404 says the result is
    // gone (and past the deadline by our record, one 404 is enough: see `on_not_found`).

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
    let meta = UploadMeta {
        execution_id: execution.id.to_string(),
        instance_id: instance.to_owned(),
    };
    // The result streams straight into the archive's multipart upload: nothing is visible there
    // until the upload completes, and a failed attempt aborts it.
    let mut upload = pipeline.archive.begin(instance, finished_at, &meta).await?;
    let started = Instant::now();
    let options = DownloadOptions::default();
    let result = {
        let download = client.download_result_restartable(instance_id, &mut upload, &options);
        tokio::select! {
            result = download => Ok(result),
            lost = keep_lease(pipeline, lease) => Err(lost),
        }
    };
    let result = match result {
        Ok(result) => result,
        Err(lost) => {
            upload.abort().await;
            return Err(lost);
        }
    };
    let download = match result {
        Ok(download) => download,
        Err(error) => {
            upload.abort().await;
            return match error {
                error @ (mint_client::Error::Expired { .. }
                | mint_client::Error::NotFound { .. }) => {
                    Ok(on_not_found(pipeline, execution, &error))
                }
                error @ mint_client::Error::NotReady { .. } => Err(Failure::Delay {
                    after: super::jitter_after(pipeline.config.poll_interval_min),
                    error: error.to_string(),
                }
                .into()),
                error => Err(classify(&error, job.attempts).into()),
            };
        }
    };
    let archived_at = pipeline.clock.now();
    let commit = async {
        let uploaded = upload.finish().await?;
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
            archived_at,
            bytes: download.bytes,
            sha256: download.sha256.clone(),
            location: String::new(),
            content_type: download.content_type.clone(),
            stored_bytes: None,
            stored_sha256: None,
            encryption: None,
            server_side_encryption: None,
            sse_kms_key_id: None,
            object_lock: None,
            purge_after: None,
            version_id: None,
        };
        // Completed, then verified (read back, decrypted, hashed), tagged and locked before its
        // manifest is written, and the manifest before the execution is recorded `archived`; the
        // lease is held all along, so no other worker starts the same download meanwhile.
        pipeline.archive.commit(&uploaded, manifest).await
    };
    let manifest = tokio::select! {
        committed = commit => committed?,
        lost = keep_lease(pipeline, lease) => return Err(lost),
    };
    tracing::info!(
        location = manifest.location,
        bytes = download.bytes,
        sha256 = download.sha256,
        "result archived"
    );
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
