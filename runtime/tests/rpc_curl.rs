//! `curl` against an RPC server: JSON in and out, keep-alive reuse, `Expect: 100-continue` for
//! larger bodies, HEAD, and the framework's JSON errors. Skipped when `curl` is not installed.

use std::net::SocketAddr;
use std::process::Command;

use runtime::rpc::{Method, Response, Server, ServerConfig};

fn curl(args: &[&str]) -> Option<(String, String)> {
    let output =
        Command::new("curl").args(["--silent", "--show-error", "--max-time", "20"]).args(args).output().ok()?;
    Some((String::from_utf8_lossy(&output.stdout).to_string(), String::from_utf8_lossy(&output.stderr).to_string()))
}

#[test]
fn curl_talks_to_the_server() {
    if curl(&["--version"]).is_none() {
        eprintln!("curl is not installed; skipped");
        return;
    }
    let server = Server::new(
        ServerConfig::new("curl", SocketAddr::from(([127, 0, 0, 1], 0)))
            .route(Method::Post, "/echo", |request| match request.json::<serde_json::Value>() {
                Ok(value) => Response::json(200, &value),
                Err(response) => response,
            })
            .route(Method::Get, "/hello", |_| Response::json(200, &serde_json::json!({ "hello": "world" }))),
    );
    let address = server.serve_in_background("curl-test").expect("serve");
    let base = format!("http://{address}");

    let (out, _) = curl(&[&format!("{base}/hello")]).expect("curl");
    assert_eq!(out, r#"{"hello":"world"}"#);

    let (out, _) =
        curl(&["-H", "Content-Type: application/json", "-d", r#"{"a":1}"#, &format!("{base}/echo")]).expect("curl");
    assert_eq!(out, r#"{"a":1}"#);

    // Over 1 KiB curl sends `Expect: 100-continue` and waits for the interim answer.
    let big = serde_json::json!({ "blob": "x".repeat(4000) }).to_string();
    let (out, _) = curl(&["-H", "Content-Type: application/json", "-d", &big, &format!("{base}/echo")]).expect("curl");
    assert_eq!(out, big);

    // Two URLs in one invocation reuse the keep-alive connection.
    let (_, err) = curl(&["-v", &format!("{base}/hello"), &format!("{base}/hello")]).expect("curl");
    assert!(err.contains("Re-using existing connection") || err.contains("Reusing existing"), "{err}");

    let (out, _) = curl(&["-I", &format!("{base}/hello")]).expect("curl");
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.to_ascii_lowercase().contains("content-length: 17"), "{out}");

    let (out, _) = curl(&["-w", "%{http_code}", &format!("{base}/nowhere")]).expect("curl");
    assert!(out.ends_with("404") && out.contains("\"error\""), "{out}");

    server.stop();
    server.join().expect("join");
}
