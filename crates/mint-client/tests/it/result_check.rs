//! Only a real result: every download path checks `Content-Type`, `Content-Length` and the ZIP
//! structure before it commits anything (issue 10 item 4).

use std::io::Write;

use mint_client::{
    DownloadErrorKind, DownloadOptions, Error, ErrorKind, InstanceId, MintClient, Operation,
    ResultFileProblem,
};

use crate::helpers;
use crate::odd_mint::{Answer, OddMint};

fn zip_bytes() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    w.start_file("report.json", options).unwrap();
    w.write_all(br#"{"outcome":"verified"}"#).unwrap();
    w.start_file("evidence/selfie.jpg", options).unwrap();
    w.write_all(&[0xAB; 4096]).unwrap();
    w.finish().unwrap().into_inner()
}

fn instance() -> InstanceId {
    InstanceId::new("inst-odd-1").unwrap()
}

fn invalid(err: &Error) -> &mint_client::InvalidResultFile {
    match err {
        Error::Download {
            kind: DownloadErrorKind::NotAResultFile(invalid),
            ..
        } => invalid,
        other => panic!("expected NotAResultFile, got {other:?}"),
    }
}

const GATEWAY_PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
    <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

#[tokio::test]
async fn an_html_page_answered_200_is_refused_with_its_first_bytes_and_nothing_is_left_behind() {
    let odd = OddMint::start().await;
    odd.script([Answer::new(200, Some("text/html"), GATEWAY_PAGE)]);
    let client = MintClient::new(odd.config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.zip");
    let err = client
        .download_result_to_path(&instance(), &path, &DownloadOptions::default())
        .await
        .unwrap_err();
    let refused = invalid(&err);
    assert!(
        matches!(refused.problem, ResultFileProblem::ContentType(ref t) if t == "text/html"),
        "{err}"
    );
    assert!(
        refused
            .first_bytes
            .starts_with("<html>  <head><title>502 Bad Gateway"),
        "{err}"
    );
    assert!(err.to_string().contains("502 Bad Gateway"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(err.is_retryable(), "a proxy's error page is retried later");
    assert!(!path.exists(), "never committed");
    assert!(!dir.path().join("result.zip.part").exists(), "nothing left");
}

#[tokio::test]
async fn an_html_page_labelled_as_a_zip_is_refused_by_its_content() {
    let odd = OddMint::start().await;
    odd.script([Answer::new(200, Some("application/zip"), GATEWAY_PAGE)]);
    let client = MintClient::new(odd.config()).unwrap();
    let mut sink = Vec::new();
    let err = client
        .download_result(&instance(), &mut sink, &DownloadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(invalid(&err).problem, ResultFileProblem::NotZip);
    assert!(sink.is_empty(), "a refused answer never reaches the writer");
}

#[tokio::test]
async fn a_truncated_zip_whose_length_agrees_is_refused() {
    let odd = OddMint::start().await;
    let zip = zip_bytes();
    let cut = zip[..zip.len() - 30].to_vec();
    odd.script([Answer::new(200, Some("application/zip"), cut.clone())]);
    let client = MintClient::new(odd.config()).unwrap();
    let mut sink = Vec::new();
    let err = client
        .download_result_restartable(&instance(), &mut sink, &DownloadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(invalid(&err).problem, ResultFileProblem::NoEndRecord);
    assert_eq!(err.received_bytes(), Some(cut.len() as u64));
}

#[tokio::test]
async fn a_real_zip_passes_and_is_summarised() {
    let odd = OddMint::start().await;
    let zip = zip_bytes();
    odd.script([Answer::new(200, None, zip.clone())]);
    let client = MintClient::new(odd.config()).unwrap();
    let mut sink = Vec::new();
    let d = client
        .download_result(&instance(), &mut sink, &DownloadOptions::default())
        .await
        .unwrap();
    assert_eq!(sink, zip);
    let summary = d.zip.expect("checked");
    assert_eq!((summary.entries, summary.zip64), (2, false));
    let seen = odd.seen();
    let request = seen.last().unwrap();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/mint/api/instances/inst-odd-1/result-file")
    );
    assert_eq!(request.headers["authorization"], "Bearer odd-token");
}

#[tokio::test]
async fn the_check_can_be_turned_off_for_a_knowingly_odd_fetch() {
    let odd = OddMint::start().await;
    odd.script([Answer::new(200, Some("text/plain"), "hello")]);
    let client = MintClient::new(odd.config()).unwrap();
    let mut sink = Vec::new();
    let opts = DownloadOptions {
        check_result_file: false,
        ..DownloadOptions::default()
    };
    let d = client
        .download_result(&instance(), &mut sink, &opts)
        .await
        .unwrap();
    assert_eq!((sink.as_slice(), d.zip), (&b"hello"[..], None));
}

#[tokio::test]
async fn a_429_on_the_result_file_is_retried_then_reported_as_rate_limited() {
    let odd = OddMint::start().await;
    odd.script([
        Answer::new(429, None, ""),
        Answer::new(200, Some("application/zip"), zip_bytes()),
    ]);
    let client = MintClient::new(odd.config()).unwrap();
    let mut sink = Vec::new();
    client
        .download_result(&instance(), &mut sink, &DownloadOptions::default())
        .await
        .expect("retried after the 429");
    let result_requests = |odd: &OddMint| {
        odd.seen()
            .iter()
            .filter(|s| s.path.ends_with("/result-file"))
            .count()
    };
    assert_eq!(result_requests(&odd), 2);

    // 429 on every attempt (4 by default): a rate limit, not a failure of the download.
    odd.script((0..4).map(|_| Answer::new(429, None, "")));
    let err = client
        .download_result(&instance(), &mut Vec::new(), &DownloadOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RateLimited {
                operation: Operation::ResultFile,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(result_requests(&odd), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_result_files_pass_the_check() {
    let sim = helpers::sim_with(helpers::unlimited()).await;
    let client = helpers::client(&sim, "demo");
    let id = helpers::finished_instance(&sim, &client, helpers::BASIC_FLOW).await;
    let mut sink = Vec::new();
    let d = client
        .download_result(&id, &mut sink, &DownloadOptions::default())
        .await
        .unwrap();
    let summary = d.zip.expect("checked");
    assert!(summary.entries >= 2, "{summary:?}");
    assert_eq!(summary.bytes, sink.len() as u64);
    assert_eq!(
        (d.sha256, d.bytes),
        mint_sim::result_file_sha256(0, id.as_str(), 5 * 1024 * 1024)
    );
}
