//! The OpenAPI document matches the server: it is served as committed, and every path it lists
//! is routed (a request to it is anything but the router's 404).

use serde_json::Value;

use crate::support::{Server, ServerOptions, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_path_is_served() {
    let server = Server::start(ServerOptions::default());
    let served: Value = client().get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let committed: Value = serde_json::from_str(include_str!("../schemas/openapi.json")).unwrap();
    assert_eq!(served, committed, "the served document is the committed one");
    let paths = committed["paths"].as_object().unwrap();
    assert!(paths.len() >= 28, "{}", paths.len());
    for (path, ops) in paths {
        let concrete = path.replace("{name}", "pod");
        for method in ops.as_object().unwrap().keys() {
            let req = match method.as_str() {
                "get" => client().get(server.url(&concrete)),
                "post" => client().post(server.url(&concrete)),
                "patch" => client().patch(server.url(&concrete)),
                "put" => client().put(server.url(&concrete)),
                "delete" => client().delete(server.url(&concrete)),
                other => panic!("{path}: method {other} not checked"),
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            // The router's fallback answers 404 with code `not_found`; a routed endpoint answers
            // something else (401 without a token, 400 for a missing body, 200, …).
            assert!(!(status == 404 && body.contains("not_found")), "{method} {path} is documented but not routed: {status} {body}");
        }
    }
    // And an undocumented path is the router's 404.
    let resp = client().get(server.url("/api/v1/nowhere")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
