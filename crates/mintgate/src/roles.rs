//! Role probes that bill nothing: Mint checks the API client's role before it looks the resource
//! up, so a call on an id that cannot exist answers `403` when the role is missing and `404` when
//! it is present. `mintgate doctor` shows them; `serve` probes at start and, while a role is
//! missing, every `pipeline.role_probe_interval` to resume the work it paused.

use mint_client::{DownloadOptions, Error as MintError, FlowId, InstanceId, MintClient, Role};

use crate::model::JobKind;

/// The three roles, in the order Mint's calls need them.
pub const ROLES: [Role; 3] = [
    Role::FlowViewer,
    Role::FlowEditor,
    Role::FlowInstanceDownload,
];

/// What a probe found.
#[derive(Debug)]
pub enum RoleProbe {
    /// The call on an id that cannot exist answered `404`: the role is there.
    Present,
    /// The call on an id that cannot exist succeeded: the role is there, but Mint did something
    /// unexpected.
    Succeeded,
    /// `403`: the role is missing.
    Missing(MintError),
    /// Anything else (an outage, `429`, refused credentials): nothing is known.
    Unknown(MintError),
}

/// An id that no flow or instance has, for probes (`prefix` says who probes, in Mint's logs).
pub fn probe_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Probes `role` with a call on `probe`, an id that cannot exist: a start of a flow that does not
/// exist starts (and bills) nothing.
pub async fn probe(client: &MintClient, role: Role, probe: &str) -> RoleProbe {
    let outcome: Result<(), MintError> = match role {
        Role::FlowViewer => match InstanceId::new(probe) {
            Ok(id) => client.get_instance(&id).await.map(|_| ()),
            Err(e) => Err(e.into()),
        },
        Role::FlowEditor => match FlowId::new(probe) {
            Ok(flow) => client
                .start_instance(&flow, &mint_client::StartInstance::default())
                .await
                .map(|_| ()),
            Err(e) => Err(e.into()),
        },
        Role::FlowInstanceDownload => match InstanceId::new(probe) {
            Ok(id) => client
                .download_result(&id, &mut tokio::io::sink(), &DownloadOptions::default())
                .await
                .map(|_| ()),
            Err(e) => Err(e.into()),
        },
    };
    match outcome {
        Err(MintError::NotFound { .. } | MintError::Expired { .. }) => RoleProbe::Present,
        Err(error @ MintError::MissingRole { .. }) => RoleProbe::Missing(error),
        Ok(()) => RoleProbe::Succeeded,
        Err(error) => RoleProbe::Unknown(error),
    }
}

/// The kinds of work that cannot run without `role` (what a missing role found at start pauses;
/// at run time the job that was refused pauses its own kind).
pub fn kinds_needing(role: Role) -> &'static [JobKind] {
    match role {
        Role::FlowViewer => &[JobKind::Check],
        Role::FlowEditor => &[JobKind::Start],
        Role::FlowInstanceDownload => &[JobKind::Download],
    }
}
