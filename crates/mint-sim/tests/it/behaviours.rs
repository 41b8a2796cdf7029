//! The other plausible Mints (`[behaviours]`): each behaviour is off by default, settable for every
//! flow, per flow, per instance and per endpoint, flipped mid-run through the admin API, and seen
//! through the simulator's own HTTP API.

use std::collections::HashSet;

use mint_sim::{
    BehaviourOverrides, Behaviours, ContractChange, FinishedAt, FlowBehaviours, FlowConfig, Limits,
    ListField, ListOrder, ResultContentType, SimConfig, StepConfig,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{SEED, TestSim, WebhookReceiver, spawn_sim, spawn_sim_with};

const BASIC: &str = "flow-kyc-basic";

fn every_flow(all_flows: FlowBehaviours) -> Behaviours {
    Behaviours {
        all_flows,
        ..Behaviours::default()
    }
}

/// A flow that finishes at once with a small result file.
fn quick_flow() -> FlowConfig {
    FlowConfig {
        id: "flow-quick".to_owned(),
        definition_id: "def-quick".to_owned(),
        name: "Quick".to_owned(),
        description: String::new(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes: 200_000,
        steps: vec![StepConfig::webhook()],
    }
}

async fn quick_sim() -> TestSim {
    let mut config = SimConfig::fixture();
    config.flows.push(quick_flow());
    config.limits = Limits::unlimited();
    spawn_sim_with(config).await
}

/// `count` finished instances of `flow-quick`, oldest first.
async fn finished(t: &TestSim, count: u64) -> Vec<String> {
    t.admin
        .create_instances("flow-quick", count, Some("Finished"))
        .await
        .unwrap()
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn behaviours_are_off_by_default_and_load_from_toml_naming_bad_keys() {
    assert_eq!(SimConfig::fixture().behaviours, Behaviours::default());
    let config = SimConfig::from_toml_str(
        r#"
        [behaviours]
        seed = 9
        [behaviours.allFlows]
        listOrder = "oldestFirst"
        listOmits = ["input"]
        finishedAt = "chronoMax"
        resultFileContentType = "application/octet-stream"
        resultFileContentLength = false
        [behaviours.flows.flow-kyc-basic]
        notFoundRate = 0.25
        listOrder = "shuffled"
        [behaviours.contract]
        list_instances = ["bareArray"]
        get_instance = ["createdAtAsNumber", "statusUnknown"]
        "#,
    )
    .unwrap();
    let b = &config.behaviours;
    assert_eq!(b.seed, Some(9));
    assert_eq!(b.all_flows.list_order, ListOrder::OldestFirst);
    assert_eq!(b.all_flows.list_omits, [ListField::Input]);
    assert_eq!(b.all_flows.finished_at, FinishedAt::ChronoMax);
    assert_eq!(
        b.all_flows.result_file_content_type,
        ResultContentType::OctetStream
    );
    let basic = b.of_flow(BASIC);
    assert_eq!(basic.list_order, ListOrder::Shuffled);
    assert_eq!(basic.not_found_rate, 0.25);
    assert_eq!(basic.finished_at, FinishedAt::ChronoMax, "inherited");
    assert_eq!(
        b.changes("get_instance"),
        [
            ContractChange::CreatedAtAsNumber,
            ContractChange::StatusUnknown
        ]
    );

    for (text, key) in [
        (
            "[behaviours.allFlows]\nnotFoundRate = 2.0\n",
            "behaviours.allFlows.notFoundRate",
        ),
        (
            "[behaviours.flows.flow-nope]\nnotFoundRate = 0.5\n",
            "behaviours.flows.flow-nope",
        ),
        (
            "[behaviours.contract]\nget_instance = [\"bareArray\"]\n",
            "behaviours.contract.get_instance[0]",
        ),
        ("[behaviours.allFlows]\nlistOrdr = \"x\"\n", "listOrdr"),
    ] {
        let err = SimConfig::from_toml_str(text).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[tokio::test]
async fn instance_lists_can_leave_out_input_and_output_per_flow() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let basic = t.start_ok(&token, BASIC).await;
    t.start_ok(&token, "flow-kyc-video").await;
    let list = |flow: &'static str| {
        let t = &t;
        let token = &token;
        async move {
            let (status, body) = t
                .get_json(token, &format!("/api/flows/{flow}/instances"))
                .await;
            assert_eq!(status, 200);
            body["items"][0].clone()
        }
    };
    let item = list(BASIC).await;
    assert_eq!(
        item["input"],
        json!({ "customer": "c-1" }),
        "default: the contract"
    );
    assert!(item.get("output").is_some());

    t.admin
        .set_behaviours(every_flow(FlowBehaviours {
            list_omits: vec![ListField::Input],
            ..FlowBehaviours::default()
        }))
        .await
        .unwrap();
    t.admin
        .set_flow_behaviours(
            BASIC,
            BehaviourOverrides {
                list_omits: Some(vec![ListField::Input, ListField::Output]),
                ..BehaviourOverrides::default()
            },
        )
        .await
        .unwrap();
    let item = list(BASIC).await;
    assert_eq!(item["id"], basic.as_str());
    assert!(
        item.get("input").is_none() && item.get("output").is_none(),
        "{item}"
    );
    let video = list("flow-kyc-video").await;
    assert!(
        video.get("input").is_none() && video.get("output").is_some(),
        "{video}"
    );

    // The instance itself still has them.
    let (_, alone) = t.get_json(&token, &format!("/api/instances/{basic}")).await;
    assert_eq!(alone["input"], json!({ "customer": "c-1" }));
    assert!(alone.get("output").is_some());
}

#[tokio::test]
async fn list_order_can_be_oldest_first_by_updated_at_or_a_seeded_shuffle() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(t.start_ok(&token, BASIC).await);
        t.advance(60).await;
    }
    // The oldest changes last: updatedAt order differs from createdAt order.
    t.admin.set_status(&started[0], "Cancelled").await.unwrap();
    let list = || async {
        let (status, body) = t
            .get_json(&token, "/api/flows/flow-kyc-basic/instances?limit=100")
            .await;
        assert_eq!(status, 200);
        ids_of(&body)
    };
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();
    assert_eq!(list().await, newest_first, "default: newest first");

    let order = |list_order| {
        every_flow(FlowBehaviours {
            list_order,
            ..FlowBehaviours::default()
        })
    };
    t.admin
        .set_behaviours(order(ListOrder::OldestFirst))
        .await
        .unwrap();
    assert_eq!(list().await, started);
    t.admin
        .set_behaviours(order(ListOrder::UpdatedAtNewestFirst))
        .await
        .unwrap();
    assert_eq!(
        list().await,
        [started[0].clone(), started[2].clone(), started[1].clone()]
    );
    t.admin
        .set_behaviours(order(ListOrder::UpdatedAtOldestFirst))
        .await
        .unwrap();
    assert_eq!(
        list().await,
        [started[1].clone(), started[2].clone(), started[0].clone()]
    );

    // Shuffled: a fresh order per request, the same sequence again for the same seed.
    t.admin
        .create_instances(BASIC, 27, Some("Finished"))
        .await
        .unwrap();
    let shuffled = Behaviours {
        seed: Some(5),
        ..order(ListOrder::Shuffled)
    };
    t.admin.set_behaviours(shuffled.clone()).await.unwrap();
    let first = list().await;
    let second = list().await;
    let unique: HashSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), 30, "a permutation of every instance");
    assert_ne!(first, second, "each request draws a new order");
    t.admin.set_behaviours(shuffled).await.unwrap();
    assert_eq!(list().await, first, "reseeded: the same draws");
    assert_eq!(t.admin.usage().await.unwrap().behaviours.shuffled_lists, 3);
}

#[tokio::test]
async fn spurious_404s_hit_instances_that_exist_at_the_configured_rate() {
    let t = quick_sim().await;
    let token = t.token("demo").await;
    let ids = finished(&t, 2).await;
    let get = |id: &str, suffix: &str| {
        let path = format!("/api/instances/{id}{suffix}");
        let t = &t;
        let token = &token;
        async move { t.get_json(token, &path).await }
    };
    assert_eq!(get(&ids[0], "").await.0, 200, "default: found");

    // One instance always 404s (as a deleted one would), the other is untouched.
    t.admin
        .set_instance_behaviours(
            &ids[0],
            BehaviourOverrides {
                not_found_rate: Some(1.0),
                activities_not_found_rate: Some(1.0),
                ..BehaviourOverrides::default()
            },
        )
        .await
        .unwrap();
    let (status, body) = get(&ids[0], "").await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "Instance not found");
    assert_eq!(get(&ids[0], "/activities").await.0, 404);
    assert_eq!(get(&ids[1], "").await.0, 200);
    assert_eq!(get(&ids[1], "/activities").await.0, 200);
    let effective = t
        .admin
        .instance_behaviours(&ids[0])
        .await
        .unwrap()
        .effective;
    assert_eq!(effective.not_found_rate, 1.0);

    // A rate over every instance of the flow: some 404s, each counted, units consumed.
    t.admin
        .set_instance_behaviours(&ids[0], BehaviourOverrides::default())
        .await
        .unwrap();
    t.admin
        .set_flow_behaviours(
            "flow-quick",
            BehaviourOverrides {
                not_found_rate: Some(0.5),
                ..BehaviourOverrides::default()
            },
        )
        .await
        .unwrap();
    let before = t.usage_of("demo").await;
    let mut not_found = 0;
    for _ in 0..40 {
        if get(&ids[1], "").await.0 == 404 {
            not_found += 1;
        }
    }
    let after = t.usage_of("demo").await;
    assert!((5..=35).contains(&not_found), "{not_found} of 40");
    assert_eq!(after.units - before.units, 40);
    let usage = t.admin.usage().await.unwrap();
    assert_eq!(usage.behaviours.spurious_not_found, 2 + not_found);
}

#[tokio::test]
async fn finished_at_can_be_absurd_while_the_status_says_finished() {
    let t = quick_sim().await;
    let token = t.token("demo").await;
    let id = finished(&t, 1).await.remove(0);
    let truth = t.admin_instance(&id).await;
    let read = || async {
        let (status, body) = t.get_json(&token, &format!("/api/instances/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "Finished");
        let (_, list) = t.get_json(&token, "/api/flows/flow-quick/instances").await;
        assert_eq!(
            list["items"][0]["finishedAt"], body["finishedAt"],
            "list items too"
        );
        body["finishedAt"].clone()
    };
    let real = read().await;
    assert_eq!(
        real.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        truth.finished_at.unwrap()
    );
    let set = |finished_at| {
        t.admin.set_flow_behaviours(
            "flow-quick",
            BehaviourOverrides {
                finished_at: Some(finished_at),
                ..BehaviourOverrides::default()
            },
        )
    };
    for (mode, expected) in [
        (FinishedAt::Year1, json!("0001-01-01T00:00:00Z")),
        (FinishedAt::ChronoMax, json!("+262142-12-31T00:00:00Z")),
        (FinishedAt::Unparseable, json!("not a date")),
        (FinishedAt::Null, Value::Null),
    ] {
        set(mode).await.unwrap();
        assert_eq!(read().await, expected, "{mode:?}");
    }
    let now = t.admin.now().await.unwrap();
    set(FinishedAt::Future).await.unwrap();
    let future: chrono::DateTime<chrono::Utc> = read().await.as_str().unwrap().parse().unwrap();
    assert!(future > now + chrono::Duration::days(300), "{future}");
    set(FinishedAt::BeforeCreatedAt).await.unwrap();
    let before: chrono::DateTime<chrono::Utc> = read().await.as_str().unwrap().parse().unwrap();
    assert!(before < truth.created_at, "{before} < {}", truth.created_at);
    // The ground truth is untouched.
    assert_eq!(t.admin_instance(&id).await.finished_at, truth.finished_at);
}

#[tokio::test]
async fn the_result_file_can_be_an_html_error_page_answered_200() {
    let t = quick_sim().await;
    let token = t.token("demo").await;
    let ids = finished(&t, 2).await;
    t.admin
        .set_instance_behaviours(
            &ids[0],
            BehaviourOverrides {
                result_file_html_rate: Some(1.0),
                ..BehaviourOverrides::default()
            },
        )
        .await
        .unwrap();
    let response = t
        .get(&token, &format!("/api/instances/{}/result-file", ids[0]))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.starts_with("<!DOCTYPE html>"), "{text}");

    let response = t
        .get(&token, &format!("/api/instances/{}/result-file", ids[1]))
        .await;
    assert_eq!(response.headers()["content-type"], "application/zip");
    let bytes = response.bytes().await.unwrap();
    let (sha256, _) = mint_sim::result_file_sha256(SEED, &ids[1], 200_000);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha256);

    let usage = t.admin.usage().await.unwrap();
    assert_eq!(usage.behaviours.html_result_files, 1);
    let demo = &usage.clients["demo"];
    assert_eq!(demo.downloads_billed, 1, "the HTML page is no download");
    assert_eq!(
        demo.units_by_endpoint["result_file"], 10,
        "both cost their units"
    );
}

#[tokio::test]
async fn the_result_file_can_answer_429_whatever_the_budget() {
    let t = quick_sim().await;
    let token = t.token("demo").await;
    let id = finished(&t, 1).await.remove(0);
    t.admin
        .set_behaviours(every_flow(FlowBehaviours {
            result_file_throttle_rate: 1.0,
            result_file_throttle_retry_after_secs: 7,
            ..FlowBehaviours::default()
        }))
        .await
        .unwrap();
    let path = format!("/api/instances/{id}/result-file");
    let response = t.get(&token, &path).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let usage = t.admin.usage().await.unwrap();
    assert_eq!(usage.behaviours.result_file_throttled, 1);
    let demo = &usage.clients["demo"];
    assert_eq!(demo.throttled, 1);
    assert_eq!(demo.units, 5, "far from the budget; the units are consumed");
    assert_eq!(demo.downloads_billed, 0);

    // Flipped off mid-run: the next request downloads.
    t.admin.set_behaviours(Behaviours::default()).await.unwrap();
    assert_eq!(t.get(&token, &path).await.status(), 200);
}

#[tokio::test]
async fn result_file_headers_can_vary_and_the_bytes_stay_the_same() {
    let t = quick_sim().await;
    let token = t.token("demo").await;
    let id = finished(&t, 1).await.remove(0);
    let (sha256, len) = mint_sim::result_file_sha256(SEED, &id, 200_000);
    let path = format!("/api/instances/{id}/result-file");
    for (content_type, content_length) in [
        (ResultContentType::OctetStream, true),
        (ResultContentType::None, true),
        (ResultContentType::Zip, false),
    ] {
        t.admin
            .set_behaviours(every_flow(FlowBehaviours {
                result_file_content_type: content_type,
                result_file_content_length: content_length,
                ..FlowBehaviours::default()
            }))
            .await
            .unwrap();
        let response = t.get(&token, &path).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        match content_type {
            ResultContentType::OctetStream => {
                assert_eq!(headers["content-type"], "application/octet-stream")
            }
            ResultContentType::None => assert!(headers.get("content-type").is_none()),
            ResultContentType::Zip => assert_eq!(headers["content-type"], "application/zip"),
        }
        if content_length {
            assert_eq!(headers["content-length"], len.to_string().as_str());
        } else {
            assert!(headers.get("content-length").is_none(), "{headers:?}");
            assert_eq!(headers["transfer-encoding"], "chunked");
        }
        let bytes = response.bytes().await.unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            sha256,
            "{content_type:?}"
        );
    }
}

#[tokio::test]
async fn a_head_on_the_result_file_costs_units_but_is_no_download() {
    let t = quick_sim().await;
    let token = t.token("demo").await;
    let id = finished(&t, 1).await.remove(0);
    let response = t
        .http
        .head(t.api(&format!("/api/instances/{id}/result-file")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert_eq!(response.headers()["content-length"], "200000");
    assert!(response.bytes().await.unwrap().is_empty());
    let demo = t.usage_of("demo").await;
    assert_eq!(demo.result_file_heads, 1);
    assert_eq!(demo.units_by_endpoint["result_file"], 5);
    assert_eq!(demo.downloads_billed, 0);
    assert_eq!(demo.bytes_served, 0);
}

#[tokio::test]
async fn contract_changes_are_selectable_per_endpoint() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let id = t.start_ok(&token, BASIC).await;
    t.advance(2).await;
    let instance_path = format!("/api/instances/{id}");
    let list_path = "/api/flows/flow-kyc-basic/instances";

    let mut behaviours = Behaviours::default();
    behaviours.contract.insert(
        "get_instance".to_owned(),
        vec![
            ContractChange::CreatedAtAsNumber,
            ContractChange::StatusUnknown,
        ],
    );
    behaviours
        .contract
        .insert("list_instances".to_owned(), vec![ContractChange::BareArray]);
    behaviours.contract.insert(
        "list_flows".to_owned(),
        vec![ContractChange::TotalCountMissing],
    );
    behaviours
        .contract
        .insert("activities".to_owned(), vec![ContractChange::StatusUnknown]);
    t.admin.set_behaviours(behaviours).await.unwrap();

    let (_, instance) = t.get_json(&token, &instance_path).await;
    let created = t.admin_instance(&id).await.created_at.timestamp();
    assert_eq!(instance["createdAt"], json!(created), "a number");
    assert_eq!(instance["status"], "Archived");
    let (_, list) = t.get_json(&token, list_path).await;
    let items = list.as_array().expect("a bare array");
    assert_eq!(items[0]["id"], id.as_str());
    assert!(
        items[0]["createdAt"].is_string(),
        "other changes stay on their endpoint"
    );
    assert_eq!(items[0]["status"], "Running");
    let (_, flows) = t.get_json(&token, "/api/flows").await;
    assert!(flows.get("totalCount").is_none() && flows["items"].is_array());
    let (_, activities) = t
        .get_json(&token, &format!("{instance_path}/activities"))
        .await;
    assert!(
        activities["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "Skipped")
    );

    // Lists-only changes are refused on single objects, naming the key.
    let mut wrong = Behaviours::default();
    wrong
        .contract
        .insert("start".to_owned(), vec![ContractChange::TotalCountMissing]);
    let err = t.admin.set_behaviours(wrong).await.unwrap_err().to_string();
    assert!(err.contains("contract.start[0]"), "{err}");
}

#[tokio::test]
async fn a_webhook_step_can_send_a_stored_secret_in_a_static_header_without_a_signature() {
    let receiver = WebhookReceiver::start().await;
    let mut config = SimConfig::fixture();
    config
        .secrets
        .insert("webhook".to_owned(), "s3cret-value".to_owned());
    let mut flow = quick_flow();
    flow.steps = vec![StepConfig::webhook_with_secret_header(
        "X-Mint-Webhook-Secret",
        "{{secret:webhook}}",
    )];
    config.flows.push(flow.clone());
    config.webhook_url = Some(receiver.url.clone());
    let t = spawn_sim_with(config).await;
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-quick").await;
    t.wait_status(&id, "Finished").await;
    crate::helpers::eventually(std::time::Duration::from_secs(10), "webhook", || async {
        (receiver.count() == 1).then_some(())
    })
    .await;
    let got = receiver.all().remove(0);
    assert_eq!(got.headers["x-mint-webhook-secret"], "s3cret-value");
    assert!(got.headers.get("x-mint-signature").is_none());
    assert!(got.headers.get("x-mint-timestamp").is_none());
    let body: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(body["instanceId"], id.as_str());

    // A placeholder naming no stored secret is refused, naming the key.
    flow.steps = vec![StepConfig::webhook_with_secret_header(
        "X-Mint-Webhook-Secret",
        "{{secret:other}}",
    )];
    let err = t.admin.put_flow(flow).await.unwrap_err().to_string();
    assert!(
        err.contains("steps[0].headers.X-Mint-Webhook-Secret"),
        "{err}"
    );
    receiver.stop();
}
