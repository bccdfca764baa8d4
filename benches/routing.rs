//! Route matching runs on every request: canonical path + table lookup. Both should stay in the
//! tens of nanoseconds and allocate nothing for already-canonical paths.

// `criterion_group!` writes an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use oidc_gateway::config::Config;
use oidc_gateway::http::path;
use oidc_gateway::routing::RouteTable;
use std::path::Path;

const CONFIG: &str = r#"
[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000"]

[[routes]]
name = "root"
upstream = "app"
[[routes]]
name = "api"
paths = ["/api", "/graphql"]
upstream = "app"
[[routes]]
name = "api-v2"
paths = ["/api/v2"]
methods = ["GET", "POST"]
upstream = "app"
[[routes]]
name = "static"
hosts = ["static.example.com", "*.cdn.example.com"]
paths = ["/assets", "/img"]
upstream = "app"
[[routes]]
name = "admin"
hosts = ["admin.example.com"]
paths = ["/"]
upstream = "app"
"#;

fn bench(c: &mut Criterion) {
    let config = Config::parse(CONFIG, Path::new("bench.toml")).expect("bench config is valid");
    let table = RouteTable::new(&config.routes);
    let get = http::Method::GET;

    c.bench_function("route: canonical path, any-host prefix", |b| {
        b.iter(|| {
            let p = path::canonicalize(black_box("/api/v2/orders/123"), false).unwrap();
            black_box(table.find(black_box("app.example.com"), &p, &get))
        })
    });
    c.bench_function("route: wildcard host", |b| {
        b.iter(|| {
            let p = path::canonicalize(black_box("/img/logo.png"), false).unwrap();
            black_box(table.find(black_box("eu.cdn.example.com"), &p, &get))
        })
    });
    c.bench_function("route: exact host, mixed case with port", |b| {
        b.iter(|| {
            let p = path::canonicalize(black_box("/settings"), false).unwrap();
            black_box(table.find(black_box("Admin.Example.com:443"), &p, &get))
        })
    });
    c.bench_function("canonicalize: path needing work", |b| {
        b.iter(|| {
            black_box(path::canonicalize(
                black_box("/a/./b/../%61pi//v2;x=1"),
                false,
            ))
        })
    });
}

/// A route's `allow_if`: a typical two-clause CEL rule on a session's claims (the rules'
/// own check is in the session bench's request rows).
fn bench_policy(c: &mut Criterion) {
    use oidc_gateway::auth::policy::{RequestView, claims_value, evaluate};
    let policy = oidc_gateway::config::Policy::compile(
        r#"claims.email.endsWith("@example.com") && "admins" in claims.groups"#,
    )
    .unwrap();
    let claims = serde_json::json!({
        "sub": "alice", "email": "alice@example.com", "name": "Alice Liddell",
        "groups": ["admins", "readers", "ops"], "preferred_username": "alice"
    });
    let claims = claims.as_object().unwrap();
    let req = RequestView {
        method: "GET",
        path: "/admin/users",
        query: "",
        host: "app.example.com",
    };
    // Built once per session or token, then shared (a reference count).
    let kept = claims_value(claims);
    assert_eq!(
        evaluate(&policy, kept.clone(), &req, None, 1_800_000_000),
        Ok(true)
    );
    c.bench_function("allow_if: two clauses on session claims", |b| {
        b.iter(|| black_box(evaluate(&policy, kept.clone(), &req, None, 1_800_000_000)))
    });
}

criterion_group!(benches, bench, bench_policy);
criterion_main!(benches);
