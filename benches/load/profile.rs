//! `--profile`: where a proxied request's CPU goes, for nginx, bare Pingora and the gateway.
//!
//! For each subject, at the same load (`wrk -t2 -c50`):
//! - CPU per request, user and system, from `/proc/PID/stat` of the proxy's processes only
//!   (the upstream is a separate nginx, so it is not counted for anyone);
//! - syscalls per request by kind, from `strace -c -f` attached during a counted run;
//! - a `perf record` profile (cpu-clock, DWARF call graphs), folded to one line per stack in
//!   `target/profiles/NAME.folded` (for flame graph tools), and its self time by bucket.

use super::*;

/// One proxy to profile: its name, the URL and header line to load it with, and its PIDs.
pub struct Subject {
    pub name: &'static str,
    pub url: String,
    pub header: Option<String>,
    pub pid: u32,
}

/// What a subject costs per request.
pub struct Cost {
    pub name: &'static str,
    pub rps: f64,
    pub user_us: f64,
    pub sys_us: f64,
    /// Syscalls per request, by name, most frequent first.
    pub syscalls: Vec<(String, f64)>,
    /// Share of CPU samples by bucket (self time), largest first.
    pub buckets: Vec<(&'static str, f64)>,
    /// The heaviest leaf functions, share of samples.
    pub leaves: Vec<(String, f64)>,
    /// Share of samples inside each of [`PHASES`] (inclusive, so they overlap).
    pub phases: Vec<f64>,
}

/// Steps of a proxied request, found by a frame in the stack (inclusive time: nested steps
/// overlap, and the shares do not add up to the whole).
pub const PHASES: &[(&str, &str)] = &[
    (
        "read and parse the request",
        "server::HttpSession::read_request",
    ),
    ("keep-alive wait (peek)", "Peek>::try_peek"),
    ("gateway: request_filter", "ProxyHttp>::request_filter"),
    (
        "gateway: upstream_request_filter",
        "ProxyHttp>::upstream_request_filter",
    ),
    (
        "gateway: logging hook (metrics, access log)",
        "ProxyHttp>::logging",
    ),
    ("upstream: take a pooled connection", "reused_stream"),
    ("upstream: return it to the pool", "release_http_session"),
    (
        "write the response (header and body)",
        "Session::write_response_tasks",
    ),
    ("syscall sendto (both directions)", "__x64_sys_sendto"),
    ("syscall recvfrom (both directions)", "__x64_sys_recvfrom"),
    ("syscall writev (nginx)", "do_writev"),
    ("syscall getpeername", "__x64_sys_getpeername"),
    ("epoll_wait", "__x64_sys_epoll_wait"),
    (
        "Pingora's timeouts (timer wheel)",
        "TimerManager::register_timer",
    ),
    ("allocator (malloc/free)", "mi_"),
    ("Redis store: read a session (fetch)", "RedisStore::fetch"),
    ("Redis store: a held session, confirmed", "RedisStore::held"),
    ("Redis store: the client's round trip", "redis::aio::"),
    ("Redis store: open the cookie", "Sealer::open_indexed"),
    (
        "Redis store: decode the session (inflate, parse)",
        "codec::decode",
    ),
    (
        "Redis store: name its revocation marks",
        "revocations::mark_keys",
    ),
];

/// The process and its children (nginx's workers).
pub fn family(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// User and system CPU seconds of `pids` so far.
pub fn cpu_seconds(pids: &[u32]) -> (f64, f64) {
    let tick = 100.0; // CLK_TCK on Linux
    pids.iter().fold((0.0, 0.0), |(u, s), pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command: state is 0, utime 11, stime 12.
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (u + field(11) / tick, s + field(12) / tick)
    })
}

/// Measures every subject in turn; `seconds` per measurement.
pub fn profile(subjects: &[Subject], seconds: u32, out: &Path) -> Vec<Cost> {
    require("strace", "strace");
    require("perf", "linux-perf");
    std::fs::create_dir_all(out).unwrap();
    subjects
        .iter()
        .map(|s| profile_one(s, seconds, out))
        .collect()
}

fn profile_one(s: &Subject, seconds: u32, out: &Path) -> Cost {
    let pids = family(s.pid);
    let load = |secs: u32| wrk(&s.url, s.header.as_deref(), secs, 50);
    load(1);

    // CPU per request.
    let before = cpu_seconds(&pids);
    let run = load(seconds);
    let after = cpu_seconds(&pids);
    assert!(run.errors == 0 && run.requests > 0, "{}: {run:?}", s.name);
    let per = |a: f64, b: f64| (b - a) * 1e6 / run.requests as f64;
    let (user_us, sys_us) = (per(before.0, after.0), per(before.1, after.1));

    // Syscalls per request: strace slows everything down, but the count per request holds.
    let trace = out.join(format!("{}.strace", s.name));
    let mut strace = Command::new("strace");
    strace.args(["-c", "-f", "-q", "-o"]).arg(&trace);
    for p in &pids {
        strace.args(["-p", &p.to_string()]);
    }
    let mut strace = strace.stderr(Stdio::null()).spawn().expect("run strace");
    std::thread::sleep(Duration::from_millis(500));
    let traced = load(seconds);
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let _ = strace.wait();
    std::thread::sleep(Duration::from_millis(300));
    let syscalls = syscall_counts(&std::fs::read_to_string(&trace).unwrap_or_default())
        .into_iter()
        .map(|(name, calls)| (name, calls as f64 / traced.requests.max(1) as f64))
        .collect();

    // Where the CPU goes.
    let data = out.join(format!("{}.perf.data", s.name));
    let pid_list = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut perf = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "499"])
        .args(["--call-graph", "dwarf,16384", "-p", &pid_list, "-o"])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run perf");
    load(seconds);
    let _ = perf.wait();
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym,dso", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .expect("perf script");
    let folded = fold(&String::from_utf8_lossy(&script.stdout));
    let mut text = String::new();
    for (stack, n) in &folded {
        text.push_str(&format!("{stack} {n}\n"));
    }
    std::fs::write(out.join(format!("{}.folded", s.name)), text).unwrap();
    let _ = std::fs::remove_file(&data);
    let (buckets, leaves) = self_time(&folded);
    let total: u64 = folded.iter().map(|(_, n)| n).sum::<u64>().max(1);
    let phases = PHASES
        .iter()
        .map(|(_, frame)| {
            let n: u64 = folded
                .iter()
                .filter(|(stack, _)| stack.contains(frame))
                .map(|(_, n)| n)
                .sum();
            n as f64 / total as f64
        })
        .collect();
    Cost {
        phases,
        name: s.name,
        rps: run.rps,
        user_us,
        sys_us,
        syscalls,
        buckets,
        leaves,
    }
}

/// The rows of `strace -c`'s table: syscall name and number of calls, most calls first.
fn syscall_counts(table: &str) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = table
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors,] syscall
            let name = *cols.last()?;
            let calls = cols.get(3)?.parse().ok()?;
            (cols.len() >= 5 && name != "total").then(|| (name.to_owned(), calls))
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    rows
}

/// `perf script` output folded into `root;...;leaf` stacks with their sample counts, heaviest
/// first. Frames are function names without offsets; unknown ones are named by their DSO.
fn fold(script: &str) -> Vec<(String, u64)> {
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut frames: Vec<String> = Vec::new();
    let mut flush = |frames: &mut Vec<String>| {
        if !frames.is_empty() {
            frames.reverse();
            *counts.entry(frames.join(";")).or_default() += 1;
            frames.clear();
        }
    };
    for line in script.lines() {
        let t = line.trim();
        if t.is_empty() {
            flush(&mut frames);
            continue;
        }
        // "ADDR SYMBOL+0xOFF (DSO)"
        let rest = t.split_once(' ').map_or("", |(_, r)| r);
        let (sym, dso) = match rest.rsplit_once(" (") {
            Some((sym, dso)) => (sym, dso.trim_end_matches(')')),
            None => (rest, ""),
        };
        let sym = sym.rsplit_once("+0x").map_or(sym, |(s, _)| s);
        let name = if sym.is_empty() || sym == "[unknown]" {
            format!(
                "[{}]",
                dso.rsplit('/')
                    .next()
                    .unwrap_or("unknown")
                    .trim_matches(['[', ']'])
            )
        } else if dso.contains("kernel") {
            format!("{sym}_[k]")
        } else {
            sym.to_owned()
        };
        frames.push(name);
    }
    flush(&mut frames);
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// The buckets a leaf frame's self time falls in, checked in order; the first match wins.
const BUCKETS: &[(&str, &[&str])] = &[
    (
        "kernel: TCP send",
        &[
            "tcp_sendmsg",
            "tcp_write",
            "tcp_push",
            "__tcp_transmit",
            "ip_",
            "loopback",
            "dev_hard",
            "__dev_queue",
            "net_rx",
            "__netif",
            "tcp_v4_rcv",
            "tcp_rcv",
            "tcp_ack",
            "__napi",
            "process_backlog",
        ],
    ),
    (
        "kernel: TCP receive",
        &[
            "tcp_recvmsg",
            "tcp_cleanup_rbuf",
            "skb_copy",
            "_copy_to_iter",
            "tcp_data_queue",
        ],
    ),
    (
        "kernel: epoll and wake-ups",
        &[
            "ep_",
            "epoll",
            "__wake_up",
            "try_to_wake_up",
            "ttwu",
            "sock_def_readable",
        ],
    ),
    (
        "kernel: scheduling and futex",
        &[
            "schedule",
            "finish_task_switch",
            "futex",
            "_raw_spin",
            "pick_next",
            "dequeue",
            "enqueue",
            "update_curr",
            "psi_",
        ],
    ),
    ("kernel: syscall entry and other", &["_[k]"]),
    (
        "allocator",
        &[
            "mi_",
            "malloc",
            "free",
            "realloc",
            "_mi_",
            "__rust_alloc",
            "__rust_dealloc",
            "cfree",
        ],
    ),
    (
        "memcpy/memmove/memset",
        &["memcpy", "memmove", "memset", "__memcmp", "memcmp", "bcmp"],
    ),
    ("HTTP parsing (httparse)", &["httparse"]),
    (
        "header maps (http crate)",
        &["http::header", "HeaderMap", "HeaderName", "HeaderValue"],
    ),
    ("tokio runtime and timers", &["tokio::"]),
    ("Pingora", &["pingora"]),
    ("the gateway's own code", &["oidc_gateway"]),
    ("logging and tracing", &["tracing"]),
    ("metrics (prometheus)", &["prometheus"]),
    ("nginx", &["ngx_"]),
    ("libc other", &["[libc", "libc.so"]),
];

fn bucket_of(leaf: &str) -> &'static str {
    BUCKETS
        .iter()
        .find(|(_, pats)| pats.iter().any(|p| leaf.contains(p)))
        .map_or("other", |(b, _)| b)
}

/// Shares of the samples, by bucket and by function.
type Shares = (Vec<(&'static str, f64)>, Vec<(String, f64)>);

/// Self time (leaf frame) by bucket and by function, as shares of all samples.
fn self_time(folded: &[(String, u64)]) -> Shares {
    let total: u64 = folded.iter().map(|(_, n)| n).sum::<u64>().max(1);
    let mut buckets: std::collections::HashMap<&'static str, u64> = Default::default();
    let mut leaves: std::collections::HashMap<&str, u64> = Default::default();
    for (stack, n) in folded {
        let leaf = stack.rsplit(';').next().unwrap_or("");
        *buckets.entry(bucket_of(leaf)).or_default() += n;
        *leaves.entry(leaf).or_default() += n;
    }
    let share = |n: u64| n as f64 / total as f64;
    let mut b: Vec<(&'static str, f64)> = buckets.into_iter().map(|(k, n)| (k, share(n))).collect();
    b.sort_by(|x, y| y.1.total_cmp(&x.1));
    let mut l: Vec<(String, f64)> = leaves
        .into_iter()
        .map(|(k, n)| (k.to_owned(), share(n)))
        .collect();
    l.sort_by(|x, y| y.1.total_cmp(&x.1));
    l.truncate(12);
    (b, l)
}

/// Prints the costs side by side, as Markdown tables for `docs/performance.md`.
pub fn print_costs(costs: &[Cost], seconds: u32, out: &Path) {
    println!();
    println!(
        "per-request cost, wrk -t2 -c50 for {seconds} s per measurement, all on 127.0.0.1; \
         folded stacks in {}",
        out.display()
    );
    let header: Vec<&str> = costs.iter().map(|c| c.name).collect();
    println!("\n| per request | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(costs.len()));
    let row = |what: &str, f: &dyn Fn(&Cost) -> String| {
        let cells: Vec<String> = costs.iter().map(f).collect();
        println!("| {what} | {} |", cells.join(" | "));
    };
    row("req/s (unprofiled run)", &|c| format!("{:.0}", c.rps));
    row("CPU, user µs", &|c| format!("{:.1}", c.user_us));
    row("CPU, system µs", &|c| format!("{:.1}", c.sys_us));
    row("CPU, total µs", &|c| {
        format!("{:.1}", c.user_us + c.sys_us)
    });
    row("syscalls", &|c| {
        format!("{:.2}", c.syscalls.iter().map(|(_, n)| n).sum::<f64>())
    });
    let mut names: Vec<&str> = Vec::new();
    for c in costs {
        for (n, per) in &c.syscalls {
            if *per >= 0.01 && !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    for n in names {
        row(&format!("  {n}"), &|c| {
            let v = c
                .syscalls
                .iter()
                .find(|(s, _)| s == n)
                .map_or(0.0, |(_, v)| *v);
            format!("{v:.2}")
        });
    }
    println!("\n| self time, share of samples | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(costs.len()));
    let mut buckets: Vec<&str> = BUCKETS.iter().map(|(b, _)| *b).collect();
    buckets.push("other");
    for b in buckets {
        row(b, &|c| {
            let v = c
                .buckets
                .iter()
                .find(|(x, _)| *x == b)
                .map_or(0.0, |(_, v)| *v);
            format!("{:.1}%", v * 100.0)
        });
    }
    println!(
        "\n| inside (inclusive µs per request: share of samples x CPU per request) | {} |",
        header.join(" | ")
    );
    println!("|---|{}", "---:|".repeat(costs.len()));
    for (i, (what, _)) in PHASES.iter().enumerate() {
        row(what, &|c| {
            format!("{:.1}", c.phases[i] * (c.user_us + c.sys_us))
        });
    }
    for c in costs {
        println!("\nheaviest functions (self), {}:", c.name);
        for (f, share) in &c.leaves {
            println!("  {:>5.1}%  {f}", share * 100.0);
        }
    }
}
