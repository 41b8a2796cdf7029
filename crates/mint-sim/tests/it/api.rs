//! Behaviour 3: The six endpoints, their parameters and error bodies.

use serde_json::{Value, json};

use crate::helpers::{spawn_sim, spawn_sim_with};

#[tokio::test]
async fn flows_list_has_the_page_shape_and_extra_fields() {
    let t = spawn_sim().await;
    let token = t.token("viewer").await;
    let (status, body) = t.get_json(&token, "/api/flows").await;
    assert_eq!(status, 200);
    assert_eq!(body["totalCount"], 2);
    assert_eq!(body["offset"], 0);
    assert_eq!(body["limit"], 20);
    let items = body["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["flow-kyc-basic", "flow-kyc-video"]);
    let flow = &items[0];
    assert_eq!(flow["definitionId"], "def-kyc-basic");
    for field in [
        "name",
        "description",
        "version",
        "isLatest",
        "isPublished",
        "createdAt",
    ] {
        assert!(flow.get(field).is_some(), "flow has {field}");
    }
    assert!(
        flow.get("accountId").is_some(),
        "an extra field clients must ignore"
    );
    assert!(body.get("_links").is_some());

    let (_, body) = t
        .get_json(
            &token,
            "/api/flows?searchTerm=video&orderBy=Name&sortBy=Descending&limit=1",
        )
        .await;
    assert_eq!(body["totalCount"], 1);
    assert_eq!(body["items"][0]["id"], "flow-kyc-video");
    let (_, body) = t.get_json(&token, "/api/flows?offset=1&limit=1").await;
    assert_eq!(body["items"][0]["id"], "flow-kyc-video");
    assert_eq!(body["totalCount"], 2);
    let (_, body) = t.get_json(&token, "/api/flows?IsDraft=true").await;
    assert_eq!(body["totalCount"], 0);
}

#[tokio::test]
async fn bad_list_parameters_get_400_with_invalid_params() {
    let t = spawn_sim().await;
    let token = t.token("viewer").await;
    let cases = [
        ("/api/flows?offset=-1", vec!["offset"]),
        ("/api/flows?limit=0", vec!["limit"]),
        ("/api/flows?limit=101", vec!["limit"]),
        ("/api/flows?limit=ten", vec!["limit"]),
        (
            "/api/flows?IsLatest=maybe&orderBy=Size",
            vec!["IsLatest", "orderBy"],
        ),
        ("/api/flows?sortBy=Up&Version=0", vec!["Version", "sortBy"]),
        (
            "/api/flows/flow-kyc-basic/instances?limit=1000&offset=x",
            vec!["offset", "limit"],
        ),
    ];
    for (path, names) in cases {
        let (status, body) = t.get_json(&token, path).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(body["status"], 400);
        assert!(
            body["title"].is_string() && body["type"].is_string() && body["traceId"].is_string()
        );
        let got: Vec<&str> = body["invalidParams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert!(p["reason"].is_string());
                p["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(got, names, "{path}");
    }
    // Parameter names bind case-insensitively, as on ASP.NET.
    let (status, _) = t
        .get_json(&token, "/api/flows?LIMIT=100&islatest=TRUE")
        .await;
    assert_eq!(status, 200);
    assert_eq!(t.usage_of("viewer").await.status_counts.get(&400), Some(&7));
}

#[tokio::test]
async fn a_definition_id_passed_as_a_flow_id_is_flow_not_found() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let (status, body) = t
        .get_json(&token, "/api/flows/def-kyc-basic/instances")
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "Flow not found");
    let response = t.start(&token, "def-kyc-basic", json!({})).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"], "Flow not found");
    assert_eq!(t.usage_of("demo").await.starts_billed, 0);
}

#[tokio::test]
async fn start_answers_201_with_the_instance_and_workflow_url() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let response = t
        .http
        .post(t.api("/api/flows/flow-kyc-basic/instances"))
        .bearer_auth(&token)
        .json(&json!({ "input": { "customer": "c-9" }, "workflowUrlTtl": 600 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "Running");
    assert_eq!(body["flowId"], "flow-kyc-basic");
    assert_eq!(body["definitionId"], "def-kyc-basic");
    assert_eq!(body["input"]["customer"], "c-9");
    assert!(body["workflowUrl"].as_str().unwrap().starts_with("http"));
    assert!(body["finishedAt"].is_null() && body["output"].is_null() && body["error"].is_null());

    let id = body["id"].as_str().unwrap();
    let (status, got) = t.get_json(&token, &format!("/api/instances/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got["id"], id);
    assert!(got.get("workflowUrl").is_none());
    assert!(
        got.get("etag").is_some(),
        "an extra field clients must ignore"
    );
}

#[tokio::test]
async fn start_bodies_are_validated() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let url = t.api("/api/flows/flow-kyc-basic/instances");
    let send = |body: &'static str, content_type: &'static str| {
        t.http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(send("{}", "text/plain").await.unwrap().status(), 415);
    assert_eq!(send("", "application/json").await.unwrap().status(), 400);
    assert_eq!(
        send("{not json", "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(send("[1]", "application/json").await.unwrap().status(), 400);
    assert_eq!(
        send(r#"{"input": 3}"#, "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    let response = send(r#"{"workflowUrlTtl": -5}"#, "application/json")
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["invalidParams"][0]["name"], "workflowUrlTtl");
    assert_eq!(
        send(r#"{"input": null}"#, "application/json")
            .await
            .unwrap()
            .status(),
        201
    );
    let usage = t.usage_of("demo").await;
    assert_eq!(usage.starts_billed, 1);
    assert_eq!(usage.units_by_endpoint["start"], 7);
}

#[tokio::test]
async fn instance_list_is_newest_first_with_full_instances() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let response = t.start(&token, "flow-kyc-basic", json!({ "n": n })).await;
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
        t.advance(1).await;
    }
    t.start_ok(&token, "flow-kyc-video").await;
    let (status, body) = t
        .get_json(&token, "/api/flows/flow-kyc-basic/instances?limit=2")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["totalCount"], 3);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], ids[2].as_str());
    assert_eq!(items[0]["input"]["n"], 2);
    assert_eq!(items[1]["id"], ids[1].as_str());
    let (_, body) = t
        .get_json(
            &token,
            "/api/flows/flow-kyc-basic/instances?offset=2&limit=2",
        )
        .await;
    assert_eq!(body["items"][0]["id"], ids[0].as_str());
}

#[tokio::test]
async fn unknown_instances_are_404_on_every_instance_endpoint() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    for suffix in ["", "/activities", "/result-file"] {
        let (status, body) = t
            .get_json(&token, &format!("/api/instances/nope{suffix}"))
            .await;
        assert_eq!(status, 404, "{suffix}");
        assert_eq!(body["status"], 404);
    }
}

/// 8. Slow listing: simulated time proportional to the flow's instance count.
#[tokio::test]
async fn listing_instances_takes_simulated_time_proportional_to_their_count() {
    let mut config = mint_sim::SimConfig::fixture();
    config.service.list_delay_micros_per_instance = 1000;
    let t = spawn_sim_with(config).await;
    let ids = t
        .admin
        .create_instances("flow-kyc-basic", 1500, Some("Finished"))
        .await
        .unwrap();
    assert_eq!(ids.len(), 1500);
    let token = t.token("viewer").await;

    // Frozen clock: the answer comes at once, and the listing's cost is on the books.
    let (status, body) = t
        .get_json(&token, "/api/flows/flow-kyc-basic/instances?limit=1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["totalCount"], 1500);
    assert_eq!(t.usage_of("viewer").await.list_latency_micros, 1_500_000);
    t.get_json(&token, "/api/flows/flow-kyc-video/instances")
        .await;
    assert_eq!(
        t.usage_of("viewer").await.list_latency_micros,
        1_500_000,
        "a flow without instances lists at once"
    );

    // A running clock: the answer leaves only once simulated time has moved 1.5 s (at 10
    // simulated seconds per real second, 150 ms; the request itself takes a few).
    t.admin.set_time_scale(10.0).await.unwrap();
    let before = t.admin.now().await.unwrap();
    t.get_json(&token, "/api/flows/flow-kyc-basic/instances?limit=1")
        .await;
    let after = t.admin.now().await.unwrap();
    assert!(
        after - before >= chrono::Duration::milliseconds(1500),
        "{}",
        after - before
    );
    assert_eq!(t.usage_of("viewer").await.list_latency_micros, 3_000_000);
}
