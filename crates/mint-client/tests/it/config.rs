//! Item 1: configuration from code and from the `MINT_*` variables; the secret never shows.

use std::collections::HashMap;

use mint_client::{ListFlows, MintClient, MintConfig};

use crate::helpers;

#[tokio::test]
async fn a_client_configured_from_mint_variables_talks_to_the_simulator() {
    let sim = helpers::sim().await;
    let vars: HashMap<&str, String> = HashMap::from([
        ("MINT_API_BASE", sim.base_url()),
        ("MINT_TOKEN_URL", sim.token_url()),
        ("MINT_CLIENT_ID", "demo".to_owned()),
        ("MINT_CLIENT_SECRET", "demo-secret".to_owned()),
        ("MINT_ENVIRONMENT", "sandbox".to_owned()),
    ]);
    let cfg = MintConfig::from_lookup(|k| vars.get(k).cloned()).unwrap();
    assert_eq!(cfg.environment, "sandbox");
    assert_eq!(cfg.scope, "signicat-api");
    let client = MintClient::new(cfg).unwrap();
    let page = client.list_flows(&ListFlows::default()).await.unwrap();
    assert!(
        page.items
            .iter()
            .any(|f| f.id.as_str() == helpers::BASIC_FLOW)
    );
    assert!(!format!("{client:?} {:?}", client.config()).contains("demo-secret"));
    assert_eq!(
        helpers::usage(&sim, "demo").await.requests_by_endpoint["list_flows"],
        1
    );
}

#[tokio::test]
async fn a_bad_api_base_is_a_configuration_error_naming_it() {
    let cfg = MintConfig::new("not a url", "http://127.0.0.1:9/token", "demo", "x".into());
    let err = MintClient::new(cfg).unwrap_err();
    assert!(err.to_string().contains("api base \"not a url\""), "{err}");
}
