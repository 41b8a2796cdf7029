//! Test support shared by the integration tests of `mintgate` and of `mintgate-lab` (which includes
//! this file with `#[path]`): the PostgreSQL, Redis and S3-compatible servers of the tests, and a
//! Mint client tuned for tests. It names nothing of the simulator, so both test binaries can use it.

use std::time::Duration;

/// The pipeline retries on its own (advanced) clock, but the client's own retries and its
/// adaptive slow-down run in real time: keep them short here (mint-client's own tests cover them,
/// and `shipped_client.rs` runs the service with the shipped settings through Mint's faults).
pub fn tune_mint_for_tests(mut config: mint_client::MintConfig) -> mint_client::MintConfig {
    config.budget.adaptive.enabled = false;
    config.budget.adaptive.default_pause = Duration::from_millis(10);
    config.budget.adaptive.max_pause = Duration::from_millis(50);
    config.retry(mint_client::RetryConfig {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        retry_after_max: Duration::from_millis(50),
        ..mint_client::RetryConfig::default()
    })
}

/// Reports that `test` did not run and why, on the process's stderr itself: `cargo test` shows
/// it (it keeps only what `println!`/`eprintln!` print in a passing test), and `.ci/run` lists
/// every such line in its summary. libtest has no run-time "ignored", so the test then returns
/// and counts as passed: this line is what says it did not run.
pub fn skip(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// The PostgreSQL server of the tests (`MINTGATE_TEST_POSTGRES_URL`), or `None` (with a note on
/// stderr) when it is not configured. When it is configured, an unreachable server fails the test.
pub fn postgres_server(test: &str) -> Option<String> {
    match std::env::var("MINTGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                test,
                "MINTGATE_TEST_POSTGRES_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)",
            );
            None
        }
    }
}

/// The Redis server of the tests (`MINTGATE_TEST_REDIS_URL`), or `None` (with a note on stderr).
/// When it is configured, a server that does not answer PING fails the test: the service would
/// fall back to a local budget share without it, and the test would pass without having used it.
#[allow(dead_code, reason = "only the lab's tests use Redis servers")]
pub async fn redis_server(test: &str) -> Option<String> {
    match std::env::var("MINTGATE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            ping_redis(&url).await.unwrap_or_else(|e| {
                panic!("MINTGATE_TEST_REDIS_URL is set but {url} does not answer PING: {e:#}")
            });
            Some(url)
        }
        _ => {
            skip(
                test,
                "MINTGATE_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379)",
            );
            None
        }
    }
}

/// PING, within 5 s.
#[allow(dead_code, reason = "only the lab's tests use Redis servers")]
pub async fn ping_redis(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut connection = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await??;
    let pong: String = redis::cmd("PING").query_async(&mut connection).await?;
    anyhow::ensure!(pong == "PONG", "answered {pong}");
    Ok(())
}

/// The S3-compatible server of the tests (`MINTGATE_TEST_S3_URL`, e.g. moto on
/// `http://127.0.0.1:5055`, started by `.ci/run`), or `None` (with a note on stderr). When it is
/// configured, an unreachable server fails the test (creating its bucket fails).
pub fn s3_server(test: &str) -> Option<String> {
    match std::env::var("MINTGATE_TEST_S3_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                test,
                "MINTGATE_TEST_S3_URL is not set (e.g. http://127.0.0.1:5055, moto started by .ci/run)",
            );
            None
        }
    }
}

/// The settings of an archive in a fresh bucket on the test server (a bucket of its own per test,
/// like the PostgreSQL schemas), with Object Lock enabled on the bucket if asked.
pub async fn fresh_bucket(server: &str, object_lock: bool) -> mintgate::archive::ArchiveConfig {
    let bucket = format!("t-{}", uuid::Uuid::new_v4().simple());
    let settings = mintgate::archive::ArchiveConfig {
        url: Some(format!("s3://{bucket}/mintgate").parse().unwrap()),
        endpoint: Some(server.parse().expect("MINTGATE_TEST_S3_URL is a URL")),
        region: Some("us-east-1".to_owned()),
        access_key_id: Some("testing".to_owned()),
        secret_access_key: Some(secrecy::SecretString::from("testing")),
        part_bytes: mintgate::archive::settings::PART_BYTES_MIN,
        ..mintgate::archive::ArchiveConfig::default()
    };
    let archive = mintgate::archive::Archive::open(&settings, std::path::Path::new("unused"))
        .expect("the S3 settings open");
    archive
        .s3()
        .expect("an S3 archive")
        .create(object_lock)
        .await
        .unwrap_or_else(|e| {
            panic!("MINTGATE_TEST_S3_URL is set but creating a bucket failed: {e:#}")
        });
    settings
}

/// A fresh schema on the test server, so concurrent tests never see each other's rows. Answers a
/// database URL whose connections use it (`options[search_path]`).
pub async fn fresh_postgres_schema(server: &str) -> String {
    use sqlx::Connection as _;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut connection = sqlx::PgConnection::connect(server)
        .await
        .unwrap_or_else(|e| panic!("MINTGATE_TEST_POSTGRES_URL is set but unreachable: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.ok();
    let separator = if server.contains('?') { '&' } else { '?' };
    format!("{server}{separator}options[search_path]={schema}")
}

/// Drops a schema made by [`fresh_postgres_schema`] (at the end of a test that passed).
pub async fn drop_postgres_schema(url: &str) {
    use sqlx::Connection as _;
    let Some((server, schema)) = url.split_once("options[search_path]=") else {
        return;
    };
    let server = server.trim_end_matches(['?', '&']);
    if let Ok(mut connection) = sqlx::PgConnection::connect(server).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&mut connection)
        .await;
        connection.close().await.ok();
    }
}
