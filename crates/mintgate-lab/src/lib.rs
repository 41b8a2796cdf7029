//! mintgate's lab: everything that runs the service against an in-process Mint simulator (the
//! demo, the benchmarks, the replica fleet harness). It lives apart from the `mintgate` crate so
//! that the production service, its library and its binary never link the simulator, `tempfile`
//! or the benchmarks' tooling; the lab depends on them, never the other way round.

pub mod bench;
pub mod demo;

use std::collections::BTreeMap;

use mintgate::config::MintProfile;
use secrecy::SecretString;

/// The Mint profiles of a service pointed at an in-process simulator (the demo, the benchmarks and
/// the fleet): one `sandbox` profile for the fixture client `client_id` (secret `<client_id>-secret`),
/// with Mint's default limits and price.
pub fn simulator_profiles(
    sim: &mint_sim::Simulator,
    client_id: &str,
) -> BTreeMap<String, MintProfile> {
    let profile = MintProfile::new(
        sim.base_url()
            .parse()
            .expect("the simulator serves a valid URL"),
        sim.token_url()
            .parse()
            .expect("the simulator serves a valid URL"),
        client_id,
        SecretString::from(format!("{client_id}-secret")),
    );
    BTreeMap::from([("sandbox".to_owned(), profile)])
}
