//! Item 3: typed ids, tolerant models, and the definition-id-as-flow-id mix-up.

use mint_client::{Error, FlowId, InstanceStatus, ListFlows, Progress, StartInstance};

use crate::helpers;

#[tokio::test]
async fn a_definition_id_passed_as_a_flow_id_is_recognised_on_list_and_start() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    let wrong = helpers::flow(helpers::BASIC_DEFINITION);
    for err in [
        client.list_instances(&wrong, 0, 10).await.unwrap_err(),
        client
            .start_instance(&wrong, &StartInstance::default())
            .await
            .unwrap_err(),
    ] {
        match &err {
            Error::DefinitionIdAsFlowId {
                definition_id,
                flow_ids,
            } => {
                assert_eq!(definition_id.as_str(), helpers::BASIC_DEFINITION);
                assert_eq!(flow_ids, &[helpers::flow(helpers::BASIC_FLOW)]);
            }
            other => panic!("expected DefinitionIdAsFlowId, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("is a definition id, not a flow id") && msg.contains("flow-kyc-basic"),
            "{msg}"
        );
    }
    let usage = helpers::usage(&sim, "demo").await;
    assert_eq!(usage.starts_billed, 0);
    assert!(
        usage.requests_by_endpoint["list_flows"] >= 2,
        "the client looked the flows up"
    );
}

#[tokio::test]
async fn an_unknown_flow_id_stays_a_plain_not_found() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    let err = client
        .list_instances(&helpers::flow("flow-nope"), 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_unknown_statuses_kept() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    // The simulator sends extra fields (account ids, links) on every model: decoding must not care.
    let flows = client.list_flows(&ListFlows::default()).await.unwrap();
    let basic = flows
        .items
        .iter()
        .find(|f| f.id.as_str() == helpers::BASIC_FLOW)
        .unwrap();
    assert_eq!(
        basic.definition_id.as_ref().unwrap().as_str(),
        helpers::BASIC_DEFINITION
    );
    let started = client
        .start_instance(&basic.id, &StartInstance::default())
        .await
        .unwrap();
    let id = started.instance.id;
    sim.admin()
        .set_status(id.as_str(), "Hibernating")
        .await
        .unwrap();
    let instance = client.get_instance(&id).await.unwrap();
    assert_eq!(instance.status, InstanceStatus::Other("Hibernating".into()));
    assert_eq!(
        client.instance_progress(&id).await.unwrap(),
        Progress::Unknown {
            status: "Hibernating".into()
        }
    );
}

#[tokio::test]
async fn an_id_that_is_not_path_safe_is_refused_before_anything_is_sent() {
    for bad in ["flow/../admin", "", "flow 1", "flow%2F"] {
        assert!(FlowId::new(bad).is_err(), "{bad:?}");
    }
}
