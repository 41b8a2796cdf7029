//! Behaviour 7: instances and result files disappear 30 days after the instance ended.

use crate::helpers::spawn_sim;

const DAY: u64 = 86_400;

#[tokio::test]
async fn finished_instances_disappear_30_days_after_they_ended() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-kyc-basic").await;
    let running = t.start_ok(&token, "flow-kyc-basic").await;
    t.finish_basic(&id).await;

    t.advance(30 * DAY - 1).await;
    let token = t.token("demo").await;
    assert_eq!(
        t.get(&token, &format!("/api/instances/{id}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        t.get(&token, &format!("/api/instances/{id}/result-file"))
            .await
            .status(),
        200
    );

    t.advance(1).await;
    for suffix in ["", "/activities", "/result-file"] {
        assert_eq!(
            t.get(&token, &format!("/api/instances/{id}{suffix}"))
                .await
                .status(),
            404,
            "{suffix}"
        );
    }
    let (_, list) = t
        .get_json(&token, "/api/flows/flow-kyc-basic/instances")
        .await;
    assert_eq!(list["totalCount"], 1);
    assert_eq!(
        list["items"][0]["id"],
        running.as_str(),
        "a running instance never expires"
    );
    let view = t.admin_instance(&id).await;
    assert!(view.deleted_at.is_some(), "the admin API still knows it");
    assert!(t.admin_instance(&running).await.deleted_at.is_none());
}
