//! Behaviour 4: The HTTP request step: the webhook, its headers and signature, and its faults.

use std::collections::BTreeMap;
use std::time::Duration;

use mint_sim::{Faults, SimConfig, StepConfig, UserStepAction};

use crate::helpers::{TestSim, WebhookReceiver, eventually, spawn_sim_with};

async fn sim_posting_to(receiver: &WebhookReceiver, signed: bool) -> TestSim {
    let mut config = SimConfig::fixture();
    let step = &mut config.flows[0].steps[3];
    *step = StepConfig::HttpRequest {
        name: "Notify".to_owned(),
        url: Some(receiver.url.clone()),
        headers: BTreeMap::from([("X-Api-Key".to_owned(), "k-{{flowId}}".to_owned())]),
        body_template: mint_sim::model::WEBHOOK_BODY_TEMPLATE_DEFAULT.to_owned(),
        hmac_secret: signed.then(|| "whsec-test".to_owned()),
    };
    spawn_sim_with(config).await
}

async fn run_basic_to_webhook(t: &TestSim) -> String {
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-kyc-basic").await;
    t.advance(2).await;
    t.admin
        .user_step(&id, UserStepAction::Complete)
        .await
        .unwrap();
    t.advance(5).await;
    id
}

#[tokio::test]
async fn webhook_is_posted_with_headers_body_and_a_valid_signature() {
    let receiver = WebhookReceiver::start().await;
    let t = sim_posting_to(&receiver, true).await;
    let id = run_basic_to_webhook(&t).await;
    t.wait_status(&id, "Finished").await;
    let got = receiver.all();
    assert_eq!(got.len(), 1);
    let hook = &got[0];
    assert_eq!(
        hook.body,
        format!(r#"{{"instanceId":"{id}","flowId":"flow-kyc-basic","status":"Finished"}}"#)
    );
    assert_eq!(hook.headers["x-api-key"], "k-flow-kyc-basic");
    assert_eq!(hook.headers["content-type"], "application/json");
    let timestamp: i64 = hook.headers["x-mint-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = format!(
        "v1={}",
        hex::encode(mint_sim::hmac_sha256(
            b"whsec-test",
            format!("{timestamp}.{}", hook.body).as_bytes()
        ))
    );
    assert_eq!(hook.headers["x-mint-signature"], expected.as_str());
    let usage = t.admin.usage().await.unwrap().webhooks;
    assert_eq!((usage.attempted, usage.delivered, usage.failed), (1, 1, 0));
    receiver.stop();
}

#[tokio::test]
async fn an_unreachable_receiver_fails_once_and_the_instance_still_finishes() {
    let receiver = WebhookReceiver::start().await;
    let t = sim_posting_to(&receiver, false).await;
    receiver.stop();
    let id = run_basic_to_webhook(&t).await;
    t.wait_status(&id, "Finished").await;
    let usage = t.admin.usage().await.unwrap().webhooks;
    assert_eq!(
        (usage.attempted, usage.delivered, usage.failed),
        (1, 0, 1),
        "no retry"
    );
}

#[tokio::test]
async fn dropped_webhooks_are_never_sent_and_duplicated_ones_twice() {
    let receiver = WebhookReceiver::start().await;
    let t = sim_posting_to(&receiver, false).await;
    t.admin
        .set_faults(Faults {
            webhook_drop_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let dropped = run_basic_to_webhook(&t).await;
    t.wait_status(&dropped, "Finished").await;
    assert_eq!(receiver.count(), 0);

    t.admin
        .set_faults(Faults {
            webhook_duplicate_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let duplicated = run_basic_to_webhook(&t).await;
    eventually(Duration::from_secs(10), "two deliveries", || async {
        (receiver.count() == 2).then_some(())
    })
    .await;
    let bodies: Vec<String> = receiver.all().into_iter().map(|r| r.body).collect();
    assert!(bodies.iter().all(|b| b.contains(&duplicated)));
    let usage = t.admin.usage().await.unwrap().webhooks;
    assert_eq!(usage.dropped, 1);
    assert_eq!(usage.duplicated, 1);
    assert_eq!(usage.attempted, 2);
    assert_eq!(usage.delivered, 2);
}

#[tokio::test]
async fn delayed_and_reordered_webhooks_arrive_late_and_out_of_order() {
    let receiver = WebhookReceiver::start().await;
    let t = sim_posting_to(&receiver, false).await;
    t.admin
        .set_faults(Faults {
            webhook_reorder_rate: 1.0,
            webhook_delay_millis: 60_000,
            ..Faults::default()
        })
        .await
        .unwrap();
    let first = run_basic_to_webhook(&t).await;
    t.wait_status(&first, "Finished").await;
    assert_eq!(
        receiver.count(),
        0,
        "held back, though the instance finished"
    );
    t.admin.set_faults(Faults::default()).await.unwrap();
    let second = run_basic_to_webhook(&t).await;
    eventually(Duration::from_secs(10), "both delivered", || async {
        (receiver.count() == 2).then_some(())
    })
    .await;
    let bodies: Vec<String> = receiver.all().into_iter().map(|r| r.body).collect();
    assert!(
        bodies[0].contains(&second) && bodies[1].contains(&first),
        "{bodies:?}"
    );
    assert_eq!(t.admin.usage().await.unwrap().webhooks.reordered, 1);

    t.admin
        .set_faults(Faults {
            webhook_delay_rate: 1.0,
            webhook_delay_millis: 50,
            ..Faults::default()
        })
        .await
        .unwrap();
    let third = run_basic_to_webhook(&t).await;
    t.wait_status(&third, "Finished").await;
    eventually(Duration::from_secs(10), "the delayed one", || async {
        (receiver.count() == 3).then_some(())
    })
    .await;
    assert_eq!(t.admin.usage().await.unwrap().webhooks.delayed, 1);
}
