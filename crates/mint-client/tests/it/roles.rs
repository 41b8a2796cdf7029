//! Item 4: a 403 names the missing role, the call, the environment and the fix.

use mint_client::{DownloadOptions, Error, ListFlows, Operation, Role, StartInstance};
use mint_sim::ClientConfig;

use crate::helpers;

fn assert_missing(err: &Error, role: Role, operation: Operation) {
    match err {
        Error::MissingRole {
            role: r,
            operation: o,
            environment,
            ..
        } => {
            assert_eq!((*r, *o), (role, operation));
            assert_eq!(environment, "sandbox");
        }
        other => panic!("expected MissingRole, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("lacks the role {role}")), "{msg}");
    assert!(
        msg.contains("grant it in the Signicat dashboard of the sandbox account"),
        "{msg}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_client_without_flow_editor_is_told_so_on_start() {
    let sim = helpers::sim().await;
    let viewer = helpers::client(&sim, "viewer");
    let err = viewer
        .start_instance(
            &helpers::flow(helpers::BASIC_FLOW),
            &StartInstance::default(),
        )
        .await
        .unwrap_err();
    assert_missing(&err, Role::FlowEditor, Operation::StartInstance);
    let usage = helpers::usage(&sim, "viewer").await;
    assert_eq!(usage.starts_billed, 0);
    assert_eq!(
        usage.requests_by_endpoint["start"], 1,
        "a 403 is not retried"
    );
}

#[tokio::test]
async fn a_client_without_flow_instance_download_is_told_so_on_download() {
    let sim = helpers::sim().await;
    let demo = helpers::client(&sim, "demo");
    let id = helpers::finished_instance(&sim, &demo, helpers::BASIC_FLOW).await;
    let no_download = helpers::client(&sim, "no-download");
    let mut sink = Vec::new();
    let err = no_download
        .download_result(&id, &mut sink, &DownloadOptions::default())
        .await
        .unwrap_err();
    assert_missing(&err, Role::FlowInstanceDownload, Operation::ResultFile);
    assert!(sink.is_empty());
}

#[tokio::test]
async fn a_client_without_flow_viewer_is_told_so_on_list() {
    let sim = helpers::sim().await;
    sim.admin()
        .put_client(ClientConfig {
            client_id: "editor-only".into(),
            client_secret: "editor-only-secret".into(),
            roles: vec!["Flow Editor".into(), "Flow Instance Download".into()],
            token_lifetime_secs: 600,
        })
        .await
        .unwrap();
    let client = helpers::client(&sim, "editor-only");
    let err = client.list_flows(&ListFlows::default()).await.unwrap_err();
    assert_missing(&err, Role::FlowViewer, Operation::ListFlows);
    // The same client can start: the role table is per call.
    client
        .start_instance(
            &helpers::flow(helpers::BASIC_FLOW),
            &StartInstance::default(),
        )
        .await
        .unwrap();
}
