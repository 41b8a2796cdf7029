//! Seeding many instances cheaply (chosen `createdAt`s and inputs, never billed) and paging a
//! flow of 100,000 through the slow listing.

use chrono::{DateTime, Duration, Utc};
use mint_sim::admin::{SeedInstance, SeedInstances};
use serde_json::{Value, json};

use crate::helpers::{spawn_sim, spawn_sim_with};

const BASIC: &str = "flow-kyc-basic";

fn page_inputs(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            i["input"]["mintgateExecutionId"]
                .as_str()
                .expect("input")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn seeded_instances_have_the_chosen_times_and_inputs_and_are_never_billed() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let started = t.start_ok(&token, BASIC).await;
    let now = t.admin.now().await.unwrap();
    let first = now - Duration::hours(2);
    let seeded = t
        .admin
        .seed_instances(
            BASIC,
            &SeedInstances {
                count: 3,
                status: Some("Finished".to_owned()),
                created_at: Some(first),
                interval_millis: 60_000,
                duration_secs: 30,
                input: Some(json!({ "mintgateExecutionId": "exec-{{n}}", "tier": "gold" })),
                ..SeedInstances::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(seeded.count, 3);
    for (n, id) in seeded.ids.iter().enumerate() {
        let instance = t.admin_instance(id).await;
        let created: DateTime<Utc> = first + Duration::minutes(n as i64);
        assert!(instance.seeded);
        assert_eq!(instance.client_id, "(seeded)");
        assert_eq!(instance.status, "Finished");
        assert_eq!(instance.created_at, created);
        assert_eq!(instance.finished_at, Some(created + Duration::seconds(30)));
        assert_eq!(
            instance.input,
            json!({ "mintgateExecutionId": format!("exec-{n}"), "tier": "gold" })
        );
        assert!(instance.activities.iter().all(|a| a.status == "Completed"));
    }

    // One spelled out, older than all the others.
    let old = t
        .admin
        .seed_instances(
            BASIC,
            &SeedInstances {
                instances: vec![SeedInstance {
                    created_at: Some(now - Duration::days(3)),
                    input: Some(json!({ "mintgateExecutionId": "exec-old" })),
                    status: Some("Faulted".to_owned()),
                    ..SeedInstance::default()
                }],
                ..SeedInstances::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.admin_instance(&old.ids[0]).await.status, "Faulted");

    // The listing is by createdAt, whatever the order of creation: newest first.
    let (_, page) = t
        .get_json(&token, "/api/flows/flow-kyc-basic/instances?limit=100")
        .await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    let expected = [
        started.as_str(),
        &seeded.ids[2],
        &seeded.ids[1],
        &seeded.ids[0],
        &old.ids[0],
    ];
    assert_eq!(ids, expected);

    // Never billed, and counted apart.
    let usage = t.admin.usage().await.unwrap();
    assert_eq!(usage.seeded[BASIC], 4);
    let billed: u64 = usage.clients.values().map(|c| c.starts_billed).sum();
    assert_eq!(billed, 1, "only the start through the API");
    let starts = t.admin.starts().await.unwrap();
    assert!(starts.by_correlation_id.is_empty());
    assert_eq!(starts.without_correlation_id, [started]);
    let seeded_only = t
        .admin
        .instances_where(Some(BASIC), None, Some(true))
        .await
        .unwrap();
    assert_eq!(seeded_only.len(), 4);

    // Refused batches say why.
    let err = t
        .admin
        .seed_instances(
            BASIC,
            &SeedInstances {
                count: 2_000_000,
                ..SeedInstances::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("count must be at most"), "{err}");
}

#[tokio::test]
async fn a_flow_of_100000_instances_pages_correctly_and_each_listing_costs_10_simulated_seconds() {
    const COUNT: u64 = 100_000;
    let mut config = mint_sim::SimConfig::fixture();
    config.limits = mint_sim::Limits::unlimited();
    let t = spawn_sim_with(config).await;
    let now = t.admin.now().await.unwrap();
    let seeded = t
        .admin
        .seed_instances(
            BASIC,
            &SeedInstances {
                count: COUNT,
                status: Some("Finished".to_owned()),
                created_at: Some(now - Duration::days(1)),
                interval_millis: 100,
                input: Some(json!({ "mintgateExecutionId": "exec-{{n}}" })),
                omit_ids: true,
                ..SeedInstances::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((seeded.count, seeded.ids.len()), (COUNT, 0));
    let token = t.token("viewer").await;
    let page = |offset: u64, limit: u64| {
        let t = &t;
        let token = &token;
        async move {
            let path = format!("/api/flows/{BASIC}/instances?offset={offset}&limit={limit}");
            let (status, body) = t.get_json(token, &path).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(body["totalCount"], COUNT);
            assert_eq!(
                (body["offset"].as_u64(), body["limit"].as_u64()),
                (Some(offset), Some(limit))
            );
            page_inputs(&body)
        }
    };
    let expected = |from: u64, count: u64| -> Vec<String> {
        (0..count)
            .map(|k| format!("exec-{}", COUNT - 1 - from - k))
            .collect()
    };
    assert_eq!(page(0, 100).await, expected(0, 100));
    assert_eq!(page(50_000, 100).await, expected(50_000, 100));
    assert_eq!(
        page(99_950, 100).await,
        expected(99_950, 50),
        "a short last page"
    );
    assert!(page(COUNT, 100).await.is_empty(), "past the end");
    let usage = t.usage_of("viewer").await;
    assert_eq!(
        usage.list_latency_micros,
        4 * 10_000_000,
        "100 µs per instance"
    );
}
