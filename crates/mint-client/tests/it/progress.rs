//! Item 8: what an instance is doing, not just `Running`.

use std::time::Duration;

use mint_client::{Error, Progress, StartInstance};
use mint_sim::{FlowConfig, StepConfig, UserStepAction};

use crate::helpers;

#[tokio::test]
async fn a_running_instance_is_either_waiting_for_the_user_or_processing() {
    let sim = helpers::sim().await;
    sim.admin()
        .put_flow(FlowConfig {
            id: "flow-slow".into(),
            definition_id: "def-slow".into(),
            name: "Slow verification".into(),
            description: String::new(),
            version: 1,
            is_latest: true,
            is_published: true,
            result_file_bytes: 1024,
            steps: vec![StepConfig::Auto {
                name: "Verify".into(),
                activity_type: "verification".into(),
                duration_secs: 3600,
                failure_probability: 0.0,
            }],
        })
        .await
        .unwrap();
    let client = helpers::client(&sim, "demo");
    let preparing = helpers::started_instance(&client, helpers::BASIC_FLOW).await;
    assert_eq!(
        client.instance_progress(&preparing).await.unwrap(),
        Progress::Processing {
            step: Some("Prepare session".into())
        },
        "first an automatic step"
    );
    let waiting = helpers::waiting_instance(&sim, &client, helpers::BASIC_FLOW).await;
    match client.instance_progress(&waiting).await.unwrap() {
        Progress::WaitingForUser { step, since } => {
            assert!(step.is_some(), "the waiting step is named");
            assert!(since.is_some());
        }
        other => panic!("expected WaitingForUser, got {other:?}"),
    }
    let busy = client
        .start_instance(&helpers::flow("flow-slow"), &StartInstance::default())
        .await
        .unwrap()
        .instance
        .id;
    assert_eq!(
        client.instance_progress(&busy).await.unwrap(),
        Progress::Processing {
            step: Some("Verify".into())
        }
    );
}

#[tokio::test]
async fn ended_instances_are_finished_faulted_or_cancelled() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    let finished = helpers::finished_instance(&sim, &client, helpers::BASIC_FLOW).await;
    assert!(matches!(
        client.instance_progress(&finished).await.unwrap(),
        Progress::Finished { at: Some(_) }
    ));

    let abandoned = helpers::waiting_instance(&sim, &client, helpers::BASIC_FLOW).await;
    sim.admin()
        .user_step(abandoned.as_str(), UserStepAction::Abandon)
        .await
        .unwrap();
    match client.instance_progress(&abandoned).await.unwrap() {
        Progress::Faulted { message } => assert!(message.is_some(), "whatever detail Mint gives"),
        other => panic!("expected Faulted, got {other:?}"),
    }

    let cancelled = helpers::started_instance(&client, helpers::BASIC_FLOW).await;
    sim.admin()
        .set_status(cancelled.as_str(), "Cancelled")
        .await
        .unwrap();
    assert_eq!(
        client.instance_progress(&cancelled).await.unwrap(),
        Progress::Cancelled
    );
}

#[tokio::test]
async fn an_instance_gone_after_thirty_days_is_expired() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    let id = helpers::finished_instance(&sim, &client, helpers::BASIC_FLOW).await;
    sim.admin()
        .advance_clock(Duration::from_secs(31 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(
        client.instance_progress(&id).await.unwrap(),
        Progress::Expired
    );
    let err = client.get_instance(&id).await.unwrap_err();
    assert!(
        matches!(&err, Error::Expired { instance_id } if instance_id == &id),
        "{err:?}"
    );
    assert!(err.to_string().contains("30 days"), "{err}");
    // A client that never saw the instance cannot tell expired from unknown: a plain 404.
    let stranger = helpers::client(&sim, "demo");
    assert!(matches!(
        stranger.get_instance(&id).await.unwrap_err(),
        Error::NotFound { .. }
    ));
}
