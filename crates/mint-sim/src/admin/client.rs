//! A typed async client of the admin API, for tests and the demo.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::*;
use crate::behaviours::{BehaviourOverrides, Behaviours};
use crate::config::{ClientConfig, Faults, FlowConfig, Limits, ServiceSettings, SimConfig};

/// Typed client of one simulator's admin API (`http://127.0.0.1:PORT/_sim`).
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the admin API at `admin_url` (e.g. `Simulator::admin_url()`).
    pub fn new(admin_url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            base: admin_url.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The admin API's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .with_context(|| format!("admin API: {what}: no answer"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("admin API: {what}: {status}: {body}");
        }
        Ok(response)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let what = format!("GET {path}");
        let response = self
            .send(self.http.get(format!("{}{path}", self.base)), &what)
            .await?;
        response
            .json()
            .await
            .with_context(|| format!("admin API: {what}: undecodable answer"))
    }

    async fn write<B: Serialize + ?Sized>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<reqwest::Response> {
        let what = format!("{method} {path}");
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body);
        self.send(request, &what).await
    }

    async fn write_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let what = format!("{method} {path}");
        self.write(method, path, body)
            .await?
            .json()
            .await
            .with_context(|| format!("admin API: {what}: undecodable answer"))
    }

    /// Moves simulated time forward and runs everything that became due; returns the new now.
    pub async fn advance_clock(&self, by: Duration) -> anyhow::Result<DateTime<Utc>> {
        let body = AdvanceRequest {
            seconds: by.as_secs_f64(),
        };
        let state: ClockState = self
            .write_json(reqwest::Method::POST, "/clock/advance", &body)
            .await?;
        Ok(state.now)
    }

    /// Simulated now.
    pub async fn now(&self) -> anyhow::Result<DateTime<Utc>> {
        Ok(self.get::<ClockState>("/clock").await?.now)
    }

    /// Changes the time scale (simulated seconds per real second; 0 freezes the clock).
    pub async fn set_time_scale(&self, time_scale: f64) -> anyhow::Result<()> {
        let body = TimeScaleRequest { time_scale };
        self.write(reqwest::Method::PUT, "/clock", &body).await?;
        Ok(())
    }

    /// Ground-truth counters.
    pub async fn usage(&self) -> anyhow::Result<Usage> {
        self.get("/usage").await
    }

    /// The whole effective configuration.
    pub async fn config(&self) -> anyhow::Result<SimConfig> {
        self.get("/config").await
    }

    /// Faults in force.
    pub async fn faults(&self) -> anyhow::Result<Faults> {
        self.get("/faults").await
    }

    /// Replaces the faults (`stormForSecs` counts from now).
    pub async fn set_faults(&self, faults: Faults) -> anyhow::Result<()> {
        self.write(reqwest::Method::PUT, "/faults", &faults).await?;
        Ok(())
    }

    /// Replaces the rate limits (and forgets the windows used so far).
    pub async fn set_limits(&self, limits: Limits) -> anyhow::Result<()> {
        self.write(reqwest::Method::PUT, "/limits", &limits).await?;
        Ok(())
    }

    /// Replaces billing, retention, listing speed, Range support and webhook timeout.
    pub async fn set_service(&self, service: ServiceSettings) -> anyhow::Result<()> {
        self.write(reqwest::Method::PUT, "/service", &service)
            .await?;
        Ok(())
    }

    /// The `[behaviours]` section in force.
    pub async fn behaviours(&self) -> anyhow::Result<Behaviours> {
        self.get("/behaviours").await
    }

    /// Replaces the whole `[behaviours]` section (`seed` reseeds their generator).
    pub async fn set_behaviours(&self, behaviours: Behaviours) -> anyhow::Result<()> {
        self.write(reqwest::Method::PUT, "/behaviours", &behaviours)
            .await?;
        Ok(())
    }

    /// Replaces the behaviour overrides of one flow (empty overrides remove them).
    pub async fn set_flow_behaviours(
        &self,
        flow_id: &str,
        overrides: BehaviourOverrides,
    ) -> anyhow::Result<()> {
        let path = format!("/behaviours/flows/{flow_id}");
        self.write(reqwest::Method::PUT, &path, &overrides).await?;
        Ok(())
    }

    /// Replaces the behaviour overrides of one instance (empty overrides remove them).
    pub async fn set_instance_behaviours(
        &self,
        instance_id: &str,
        overrides: BehaviourOverrides,
    ) -> anyhow::Result<()> {
        let path = format!("/instances/{instance_id}/behaviours");
        self.write(reqwest::Method::PUT, &path, &overrides).await?;
        Ok(())
    }

    /// The behaviour overrides of one instance and the behaviours in force for it.
    pub async fn instance_behaviours(
        &self,
        instance_id: &str,
    ) -> anyhow::Result<InstanceBehaviours> {
        self.get(&format!("/instances/{instance_id}/behaviours"))
            .await
    }

    /// Completes or abandons the user step `instance_id` waits at (error if it does not wait).
    pub async fn user_step(&self, instance_id: &str, action: UserStepAction) -> anyhow::Result<()> {
        let path = format!("/instances/{instance_id}/user-step");
        self.write(reqwest::Method::POST, &path, &UserStepRequest { action })
            .await?;
        Ok(())
    }

    /// Adds or replaces an API client.
    pub async fn put_client(&self, client: ClientConfig) -> anyhow::Result<()> {
        let path = format!("/clients/{}", client.client_id);
        self.write(reqwest::Method::PUT, &path, &client).await?;
        Ok(())
    }

    /// Adds or replaces a flow.
    pub async fn put_flow(&self, flow: FlowConfig) -> anyhow::Result<()> {
        let path = format!("/flows/{}", flow.id);
        self.write(reqwest::Method::PUT, &path, &flow).await?;
        Ok(())
    }

    /// Revokes every token issued to `client_id` (they answer 401 from now on).
    pub async fn revoke_tokens(&self, client_id: &str) -> anyhow::Result<()> {
        let path = format!("/clients/{client_id}/revoke-tokens");
        self.write(reqwest::Method::POST, &path, &serde_json::json!({}))
            .await?;
        Ok(())
    }

    /// Every instance ever started, deleted ones included, oldest first.
    pub async fn instances(&self) -> anyhow::Result<Vec<AdminInstance>> {
        self.get("/instances").await
    }

    /// One instance, deleted or not.
    pub async fn instance(&self, instance_id: &str) -> anyhow::Result<AdminInstance> {
        self.get(&format!("/instances/{instance_id}")).await
    }

    /// SHA-256 (hex) and length of the instance's result file.
    pub async fn result_sha256(&self, instance_id: &str) -> anyhow::Result<(String, u64)> {
        let digest: ResultDigest = self
            .get(&format!("/instances/{instance_id}/result-sha256"))
            .await?;
        Ok((digest.sha256, digest.size))
    }

    /// Forces the status of an instance to any string (its lifecycle stops there).
    pub async fn set_status(&self, instance_id: &str, status: &str) -> anyhow::Result<()> {
        let path = format!("/instances/{instance_id}/status");
        let body = StatusRequest {
            status: status.to_owned(),
        };
        self.write(reqwest::Method::PUT, &path, &body).await?;
        Ok(())
    }

    /// Seeds `count` instances of `flow_id` directly (unbilled, no API request, created now),
    /// optionally forced to `status`; returns their ids, oldest first.
    pub async fn create_instances(
        &self,
        flow_id: &str,
        count: u64,
        status: Option<&str>,
    ) -> anyhow::Result<Vec<String>> {
        let body = SeedInstances {
            count,
            status: status.map(str::to_owned),
            ..SeedInstances::default()
        };
        Ok(self.seed_instances(flow_id, &body).await?.ids)
    }

    /// Seeds instances of `flow_id` as `body` says (chosen `createdAt`s, inputs, statuses).
    pub async fn seed_instances(
        &self,
        flow_id: &str,
        body: &SeedInstances,
    ) -> anyhow::Result<CreatedInstances> {
        let path = format!("/flows/{flow_id}/instances");
        self.write_json(reqwest::Method::POST, &path, body).await
    }

    /// Every instance, filtered (`flowId`, `status`, `seeded`), in creation order.
    pub async fn instances_where(
        &self,
        flow_id: Option<&str>,
        status: Option<&str>,
        seeded: Option<bool>,
    ) -> anyhow::Result<Vec<AdminInstance>> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(flow_id) = flow_id {
            query.append_pair("flowId", flow_id);
        }
        if let Some(status) = status {
            query.append_pair("status", status);
        }
        if let Some(seeded) = seeded {
            query.append_pair("seeded", if seeded { "true" } else { "false" });
        }
        self.get(&format!("/instances?{}", query.finish())).await
    }

    /// The starts billed through the API, by correlation id.
    pub async fn starts(&self) -> anyhow::Result<Starts> {
        self.get("/starts").await
    }

    /// How many times each correlation id was started (billed).
    pub async fn starts_per_correlation_id(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        Ok(self
            .starts()
            .await?
            .by_correlation_id
            .into_iter()
            .map(|(id, instances)| (id, instances.len() as u64))
            .collect())
    }

    /// SHA-256 and size of every retained `Finished` instance's result file, by instance id
    /// (seeded instances only when `seeded`).
    pub async fn results(&self, seeded: bool) -> anyhow::Result<BTreeMap<String, (String, u64)>> {
        let path = if seeded {
            "/results?seeded=true"
        } else {
            "/results"
        };
        let results: Results = self.get(path).await?;
        Ok(results
            .instances
            .into_iter()
            .map(|(id, d)| (id, (d.sha256, d.size)))
            .collect())
    }
}
