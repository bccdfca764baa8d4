//! Route matching runs on every request: prove it allocates nothing for canonical paths, with a
//! counting global allocator (per thread, so parallel tests do not interfere).

use oidc_gateway::config::Config;
use oidc_gateway::http::path;
use oidc_gateway::routing::RouteTable;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(|c| c.get());
    f();
    ALLOCATIONS.with(|c| c.get()) - before
}

#[test]
fn matching_a_canonical_request_does_not_allocate() {
    let config = Config::parse(
        r#"
[[upstreams]]
name = "a"
targets = ["127.0.0.1:1"]
[[routes]]
name = "root"
upstream = "a"
[[routes]]
name = "api"
paths = ["/api"]
methods = ["GET"]
upstream = "a"
[[routes]]
name = "host"
hosts = ["app.example.com", "*.example.org"]
upstream = "a"
"#,
        Path::new("t.toml"),
    )
    .unwrap();
    let table = RouteTable::new(&config.routes);
    let get = http::Method::GET;
    for (host, p, want) in [
        ("x.test", "/api/v1", 1),
        ("APP.example.com:8443", "/", 2),
        ("a.b.example.org", "/api", 2),
        ("other", "/z", 0),
    ] {
        let mut found = None;
        let n = allocations_during(|| {
            let canonical = path::canonicalize(p, false).unwrap();
            found = table.find(host, &canonical, &get).map(|m| m.route.index());
        });
        assert_eq!(found, Some(want), "{host} {p}");
        assert_eq!(n, 0, "{host} {p} allocated {n} times");
    }
}
