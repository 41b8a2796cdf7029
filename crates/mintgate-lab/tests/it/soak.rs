//! The kill -9 soak, bounded: the real `serve` process (this package's binary, whose `serve` is
//! `mintgate serve`) SIGKILLed at seeded moments against a simulator with its faults on, then
//! checked against the simulator's truth (see `mintgate_lab::bench::soak`). On SQLite, and on
//! PostgreSQL + Redis with two replicas. `mintgate-lab bench soak` runs the longer one.

use std::path::PathBuf;
use std::time::Duration;

use mintgate_lab::bench::soak::{Backend, SoakOptions, soak};

use crate::support::{drop_postgres_schema, fresh_postgres_schema, postgres_server, redis_server};

fn options(seed: u64, backend: Backend) -> SoakOptions {
    SoakOptions {
        seed,
        executions: 32,
        kills: 8,
        backend,
        service_binary: PathBuf::from(env!("CARGO_BIN_EXE_mintgate-lab")),
        result_file_bytes: 1024 * 1024,
        deadline: Duration::from_secs(100),
        verbose: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_on_sqlite_every_execution_is_started_once_and_archived_intact() {
    let report = soak(options(17, Backend::Sqlite)).await.unwrap();
    println!("{report}");
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(report.kills, 8);
    assert_eq!(report.archived, 32, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_on_postgres_and_redis_two_replicas_start_once_and_archive_intact() {
    let test = "soak::killed_at_random_on_postgres_and_redis";
    let Some(postgres) = postgres_server(test) else {
        return;
    };
    let Some(redis_url) = redis_server(test).await else {
        return;
    };
    let database_url = fresh_postgres_schema(&postgres).await;
    let report = soak(options(
        29,
        Backend::Postgres {
            database_url: database_url.clone(),
            redis_url,
            replicas: 2,
        },
    ))
    .await
    .unwrap();
    println!("{report}");
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(report.kills, 8);
    assert_eq!(report.archived, 32, "{report}");
    drop_postgres_schema(&database_url).await;
}

/// Group commit keeps the promise of one transaction per request: a `serve` process SIGKILLed in
/// the middle of a burst of `POST /v1/executions` loses none it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_burst_every_acknowledged_execution_is_in_the_database() {
    let report = mintgate_lab::bench::soak::kill_during_burst(
        &PathBuf::from(env!("CARGO_BIN_EXE_mintgate-lab")),
        5000,
        64,
        400,
    )
    .await
    .unwrap();
    println!("{report:?}");
    assert!(report.lost.is_empty(), "{report:?}");
    assert!(report.acknowledged >= 400, "{report:?}");
    assert!(
        report.unanswered > 0,
        "the kill came after the burst: nothing was in flight ({report:?})"
    );
    assert!(report.stored >= report.acknowledged, "{report:?}");
}
