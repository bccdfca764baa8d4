//! `conf/grafana-dashboard.json` is valid JSON and queries only metrics the gateway really
//! exports: the list comes from a running gateway's `/metrics`, not from a copy in the test.

use crate::support;

use std::collections::BTreeSet;
use support::*;

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "expr"
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_owned());
                }
                exprs(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/grafana-dashboard.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(
        queries.len() >= 10,
        "expected a panel per topic, found {} queries",
        queries.len()
    );

    // A gateway with a provider registers every metric family at start.
    // With a rate-limited route and the admin API, whose series start at zero.
    let up = TestUpstream::start("a");
    let gw = GatewayProcess::start(&format!(
        "[session]\nsecrets = [\"0123456789abcdef0123456789abcdef!\"]\n[[providers]]\nname = \"p\"\nissuer = \"http://127.0.0.1:1\"\n\
         client_id = \"c\"\nredirect_uri = \"http://127.0.0.1:2/cb\"\n[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"r\"\nupstream = \"a\"\nauth = {{ provider = \"p\" }}\n\
         rate_limit = {{ per = \"sub\", requests = 100 }}\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\n\
         auth = {{ provider = \"p\", audience_required = [\"a\"], groups_required = [\"g\"] }}\n",
        up.address(),
        free_port()
    ));
    // Request counters get their series with the first request.
    client().get(gw.url("/")).send().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let metrics = gw.metrics().await;
    let mut exported = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            exported.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    // The process collector: CPU, memory and file descriptors of the gateway itself.
    for m in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(exported.contains(m), "{m} is not exported");
    }
    let mut used = BTreeSet::new();
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(at) = rest.find("oidc_gateway_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            used.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    let unknown: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the gateway does not export: {unknown:?}\nexported: {exported:?}"
    );
    // Usable on a fleet: every query is filtered by the job and instance variables and uses
    // Grafana's rate interval rather than a fixed window.
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["job", "instance"] {
        assert!(variables.contains(&v), "no ${v} variable: {variables:?}");
    }
    for q in &queries {
        assert!(
            !q.contains("oidc_gateway_") || q.contains("instance=~\"$instance\""),
            "not filtered by instance: {q}"
        );
        assert!(
            !q.contains("[5m]") && (!q.contains("rate(") || q.contains("$__rate_interval")),
            "a fixed rate window: {q}"
        );
    }
    assert!(
        used.contains("oidc_gateway_requests_refused_total"),
        "no panel on refused requests"
    );
    for topic in [
        "oidc_gateway_session_lookups_total",
        "oidc_gateway_logins_total",
        "oidc_gateway_upstream_target_healthy",
        "oidc_gateway_jwks_fetch_total",
    ] {
        assert!(
            used.contains(topic),
            "the dashboard has no panel on {topic}"
        );
    }
}
