//! Item 7: both list endpoints as async streams.

use std::collections::HashSet;

use futures::TryStreamExt;
use mint_client::ListFlows;

use crate::helpers;

#[tokio::test]
async fn the_instances_stream_walks_every_page() {
    let sim = helpers::sim_with(helpers::unlimited()).await;
    let created = sim
        .admin()
        .create_instances(helpers::BASIC_FLOW, 250, None)
        .await
        .unwrap();
    assert_eq!(created.len(), 250);
    let client = helpers::client(&sim, "demo");
    let all: Vec<_> = client
        .instances(&helpers::flow(helpers::BASIC_FLOW))
        .try_collect()
        .await
        .unwrap();
    let ids: HashSet<_> = all.iter().map(|i| i.id.as_str().to_owned()).collect();
    assert_eq!(ids.len(), 250, "every instance once");
    assert_eq!(
        helpers::usage(&sim, "demo").await.requests_by_endpoint["list_instances"],
        3
    );
}

#[tokio::test]
async fn the_flows_stream_walks_every_page() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    let query = ListFlows {
        limit: Some(1),
        ..ListFlows::default()
    };
    let flows: Vec<_> = client.flows(query).try_collect().await.unwrap();
    let ids: Vec<_> = flows.iter().map(|f| f.id.as_str()).collect();
    assert!(
        ids.contains(&"flow-kyc-basic") && ids.contains(&"flow-kyc-video"),
        "{ids:?}"
    );
    let requests = helpers::usage(&sim, "demo").await.requests_by_endpoint["list_flows"];
    assert_eq!(
        requests as usize,
        flows.len(),
        "one page of one flow per request"
    );
}
