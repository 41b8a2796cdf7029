//! Issue 13 item 4: the contract probe reports each of mint-sim's changed answers
//! (`[behaviours.contract]` and the result-file header behaviours), nothing for the contract
//! itself, and bills nothing.

use mint_client::contract::{HeaderProbe, ProbeTarget, Severity, StepOutcome};
use mint_client::{InstanceId, MintClient, Operation};
use mint_sim::{Behaviours, ContractChange, FlowBehaviours, ResultContentType, Simulator};

use crate::helpers;

/// A simulator without rate limits, a client, and one finished instance of the basic flow.
async fn setup() -> (Simulator, MintClient, InstanceId) {
    let sim = helpers::sim_with(helpers::unlimited()).await;
    // The simulator's limits are lifted; so is the client's budget (the cases add up to more than
    // a minute's 90 units).
    let budget = mint_client::BudgetConfig {
        limit_units: 100_000,
        burst_units: 10_000,
        ..mint_client::BudgetConfig::default()
    };
    let client = MintClient::new(helpers::config(&sim, "demo").budget(budget)).unwrap();
    let id = helpers::finished_instance(&sim, &client, helpers::BASIC_FLOW).await;
    (sim, client, id)
}

fn target(id: &InstanceId) -> ProbeTarget {
    ProbeTarget {
        flow_id: Some(helpers::flow(helpers::BASIC_FLOW)),
        instance_id: Some(id.clone()),
        ..ProbeTarget::default()
    }
}

#[tokio::test]
async fn the_contract_itself_gives_no_finding_and_the_probe_bills_nothing() {
    let (sim, client, id) = setup().await;
    let before = helpers::usage(&sim, "demo").await;
    let report = client.probe_contract(&target(&id)).await;
    let after = helpers::usage(&sim, "demo").await;

    assert_eq!(report.findings, [], "{report:#?}");
    let answered: Vec<_> = report
        .steps
        .iter()
        .map(|s| (s.endpoint, s.method.as_str(), s.outcome.clone()))
        .collect();
    let ok = |findings| StepOutcome::Answered {
        status: 200,
        findings,
    };
    assert_eq!(
        answered,
        [
            (Operation::ListFlows, "GET", ok(0)),
            (Operation::ListInstances, "GET", ok(0)),
            (Operation::GetInstance, "GET", ok(0)),
            (Operation::Activities, "GET", ok(0)),
            (Operation::ResultFile, "HEAD", ok(0)),
        ]
    );
    // The simulator's truth: no start, no download, one HEAD; the units the report says.
    assert_eq!(after.starts_billed, before.starts_billed);
    assert_eq!(after.downloads_billed, before.downloads_billed);
    assert_eq!(after.result_file_heads, before.result_file_heads + 1);
    assert_eq!(after.bytes_served, before.bytes_served);
    assert_eq!(after.units - before.units, u64::from(report.units()));
    assert_eq!(report.units(), 4 + 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn each_changed_answer_shape_of_the_simulator_is_reported() {
    use ContractChange::{BareArray, CreatedAtAsNumber, StatusUnknown, TotalCountMissing};
    let (sim, client, id) = setup().await;
    // (sim endpoint key, change, the finding expected: endpoint, field, severity)
    let cases = [
        (
            "list_flows",
            CreatedAtAsNumber,
            Operation::ListFlows,
            "items[].createdAt",
            Severity::Warning,
        ),
        (
            "list_instances",
            CreatedAtAsNumber,
            Operation::ListInstances,
            "items[].createdAt",
            Severity::Warning,
        ),
        (
            "get_instance",
            CreatedAtAsNumber,
            Operation::GetInstance,
            "createdAt",
            Severity::Warning,
        ),
        (
            "list_instances",
            StatusUnknown,
            Operation::ListInstances,
            "items[].status",
            Severity::Warning,
        ),
        (
            "get_instance",
            StatusUnknown,
            Operation::GetInstance,
            "status",
            Severity::Warning,
        ),
        (
            "activities",
            StatusUnknown,
            Operation::Activities,
            "items[].status",
            Severity::Warning,
        ),
        (
            "list_flows",
            TotalCountMissing,
            Operation::ListFlows,
            "totalCount",
            Severity::Warning,
        ),
        (
            "list_instances",
            TotalCountMissing,
            Operation::ListInstances,
            "totalCount",
            Severity::Warning,
        ),
        (
            "activities",
            TotalCountMissing,
            Operation::Activities,
            "totalCount",
            Severity::Info,
        ),
        (
            "list_flows",
            BareArray,
            Operation::ListFlows,
            "(body)",
            Severity::Error,
        ),
        (
            "list_instances",
            BareArray,
            Operation::ListInstances,
            "(body)",
            Severity::Error,
        ),
        (
            "activities",
            BareArray,
            Operation::Activities,
            "(body)",
            Severity::Info,
        ),
    ];
    for (key, change, endpoint, field, severity) in cases {
        let mut behaviours = Behaviours::default();
        behaviours.contract.insert(key.to_owned(), vec![change]);
        sim.admin().set_behaviours(behaviours).await.unwrap();
        let report = client.probe_contract(&target(&id)).await;
        let found: Vec<_> = report
            .findings
            .iter()
            .map(|f| (f.endpoint, f.field.as_str(), f.severity))
            .collect();
        assert_eq!(
            found,
            [(endpoint, field, severity)],
            "{key} {change:?}: {report:#?}"
        );
        assert!(!report.has_failed_step(), "{report:#?}");
    }
    let finding = {
        let mut behaviours = Behaviours::default();
        behaviours
            .contract
            .insert("get_instance".into(), vec![StatusUnknown]);
        sim.admin().set_behaviours(behaviours).await.unwrap();
        client.probe_contract(&target(&id)).await.findings.remove(0)
    };
    assert_eq!(finding.found, "Archived");
    assert!(finding.expected.contains("Finished"), "{finding:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn each_odd_result_file_header_of_the_simulator_is_reported() {
    let (sim, client, id) = setup().await;
    let header_findings = |report: mint_client::contract::ContractReport| {
        report
            .findings
            .iter()
            .map(|f| (f.endpoint, f.field.clone(), f.severity))
            .collect::<Vec<_>>()
    };
    let with = |all_flows: FlowBehaviours| Behaviours {
        all_flows,
        ..Behaviours::default()
    };
    let rf = Operation::ResultFile;
    let cases = [
        (
            with(FlowBehaviours {
                result_file_content_type: ResultContentType::OctetStream,
                ..FlowBehaviours::default()
            }),
            vec![(rf, "header Content-Type".to_owned(), Severity::Info)],
        ),
        (
            with(FlowBehaviours {
                result_file_content_type: ResultContentType::None,
                ..FlowBehaviours::default()
            }),
            vec![(rf, "header Content-Type".to_owned(), Severity::Warning)],
        ),
        (
            with(FlowBehaviours {
                result_file_content_length: false,
                ..FlowBehaviours::default()
            }),
            vec![(rf, "header Content-Length".to_owned(), Severity::Warning)],
        ),
        (
            with(FlowBehaviours {
                result_file_html_rate: 1.0,
                ..FlowBehaviours::default()
            }),
            vec![(rf, "header Content-Type".to_owned(), Severity::Error)],
        ),
    ];
    for (behaviours, expected) in cases {
        sim.admin()
            .set_behaviours(behaviours.clone())
            .await
            .unwrap();
        let report = client.probe_contract(&target(&id)).await;
        assert_eq!(header_findings(report), expected, "{behaviours:?}");
    }
    sim.admin()
        .set_behaviours(Behaviours::default())
        .await
        .unwrap();
    sim.admin()
        .set_service(mint_sim::ServiceSettings {
            accept_ranges: true,
            ..mint_sim::ServiceSettings::default()
        })
        .await
        .unwrap();
    let report = client.probe_contract(&target(&id)).await;
    assert_eq!(
        header_findings(report),
        [(rf, "header Accept-Ranges".to_owned(), Severity::Info)]
    );

    // The same headers read with a GET dropped after them: a download starts at the simulator.
    let before = helpers::usage(&sim, "demo").await;
    let answer = client
        .raw_result_file_headers(&id, HeaderProbe::Get)
        .await
        .unwrap();
    assert_eq!((answer.method.as_str(), answer.status), ("GET", 200));
    assert_eq!(answer.header("Content-Type"), Some("application/zip"));
    let after = helpers::usage(&sim, "demo").await;
    assert_eq!(after.units - before.units, 5);
    assert_eq!(after.downloads_billed, before.downloads_billed + 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_missing_role_is_a_failed_step_and_the_probe_goes_on() {
    let (sim, demo, id) = setup().await;
    // `no-download` may read everything but the result file.
    let client = helpers::client(&sim, "no-download");
    let report = client.probe_contract(&target(&id)).await;
    let last = report.steps.last().unwrap();
    assert_eq!(last.endpoint, Operation::ResultFile);
    assert!(
        matches!(&last.outcome, StepOutcome::Failed { status: Some(403), error } if error.contains("Flow Instance Download")),
        "{report:#?}"
    );
    assert_eq!(report.steps.len(), 5);
    assert_eq!(report.findings, []);
    assert!(report.has_failed_step());
    // Nothing to pick a result file from: skipped, with the reason.
    let empty_flow = mint_client::contract::ProbeTarget {
        flow_id: Some(helpers::flow("flow-kyc-video")),
        ..ProbeTarget::default()
    };
    let report = demo.probe_contract(&empty_flow).await;
    assert!(
        matches!(&report.steps[2].outcome, StepOutcome::Skipped { reason } if reason.contains("lists none")),
        "{report:#?}"
    );
    sim.shutdown().await;
}
