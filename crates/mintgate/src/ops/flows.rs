//! `mintgate flows`: the flows, flow id and definition id side by side (they are confused
//! constantly: instance calls take the flow id).

use std::path::Path;

use futures::TryStreamExt as _;
use mint_client::ListFlows;
use serde_json::json;

use super::output::{CliError, CliResult, Table, print_json};

#[derive(Debug, clap::Args)]
pub struct FlowsArgs {
    /// Only flows whose name or description contains this text (Mint's `searchTerm`).
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    #[command(flatten)]
    env: super::EnvArg,
    /// Print the flows as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: FlowsArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    let (name, profile) = super::pick_profile(&config, &args.env)?;
    let client = super::client_for(&name, profile)?;
    let query = ListFlows {
        search_term: args.search.clone(),
        ..ListFlows::default()
    };
    let flows: Vec<mint_client::Flow> = client
        .flows(query)
        .try_collect()
        .await
        .map_err(|e| CliError::from_mint(&e, &name))?;
    if args.json {
        let items: Vec<serde_json::Value> = flows
            .iter()
            .map(|f| {
                json!({
                    "id": f.id.as_str(),
                    "definitionId": f.definition_id.as_ref().map(|d| d.as_str()),
                    "name": f.name,
                    "description": f.description,
                    "version": f.version,
                    "isLatest": f.is_latest,
                    "isPublished": f.is_published,
                    "createdAt": f.created_at,
                })
            })
            .collect();
        print_json(&json!(items));
        return Ok(());
    }
    if flows.is_empty() {
        println!(
            "no flows in the {name} environment{}",
            args.search
                .as_ref()
                .map(|s| format!(" match {s:?}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let mut table = Table::new([
        "FLOW ID",
        "DEFINITION ID",
        "NAME",
        "VERSION",
        "LATEST",
        "PUBLISHED",
    ]);
    let yes_no = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "",
    };
    for flow in &flows {
        table.row([
            flow.id.as_str().to_owned(),
            flow.definition_id
                .as_ref()
                .map(|d| d.as_str().to_owned())
                .unwrap_or_default(),
            flow.name.clone().unwrap_or_default(),
            flow.version.map(|v| v.to_string()).unwrap_or_default(),
            yes_no(flow.is_latest).to_owned(),
            yes_no(flow.is_published).to_owned(),
        ]);
    }
    print!("{}", table.render(0));
    println!(
        "\n{} flow(s) in {name}; start and instance calls take the FLOW ID, not the definition id",
        flows.len()
    );
    Ok(())
}
