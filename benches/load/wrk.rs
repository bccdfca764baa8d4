//! Driving `wrk`: one target, targets in rounds, and paired runs of two processes at once.

use super::*;

#[derive(Clone, Debug)]
pub struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub errors: u64,
}

pub fn wrk(url: &str, header: Option<&str>, seconds: u32, connections: u32) -> Wrk {
    wrk_threads(2, url, header, seconds, connections)
}

/// The median over `rounds` of `a`'s req/s divided by `b`'s, both loaded **at the same moment**
/// (one `wrk` thread and half the connections each). Both then meet the same machine state, so
/// the ratio measures what a request costs each of them; on this shared VM back-to-back runs of
/// one target vary by ±20%, a pair by about ±5%.
pub fn paired(a: &Target, b: &Target, rounds: usize, seconds: u32, connections: u32) -> f64 {
    paired_load(wrk_one_thread, a, b, rounds, seconds, connections, |r| {
        r.errors == 0
    })
}

/// `wrk` with one thread (each side of a paired run gets one).
pub fn wrk_one_thread(url: &str, header: Option<&str>, seconds: u32, connections: u32) -> Wrk {
    wrk_threads(1, url, header, seconds, connections)
}

/// A load generator: URL, header line, seconds, connections.
pub type Load = fn(&str, Option<&str>, u32, u32) -> Wrk;

/// [`paired`] with any load generator, where `a`'s run is judged by `a_ok` (for a target whose
/// answer is a refusal).
pub fn paired_load(
    load: Load,
    a: &Target,
    b: &Target,
    rounds: usize,
    seconds: u32,
    connections: u32,
    a_ok: fn(&Wrk) -> bool,
) -> f64 {
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let (ra, rb) = std::thread::scope(|s| {
                let one = move |t: &Target| load(&t.1, t.2.as_deref(), seconds, connections / 2);
                let ha = s.spawn(move || one(a));
                let hb = s.spawn(move || one(b));
                (ha.join().unwrap(), hb.join().unwrap())
            });
            for (t, r, ok) in [(a, &ra, a_ok(&ra)), (b, &rb, rb.errors == 0)] {
                assert!(
                    ok && r.requests > 0,
                    "{}: {} errors, {} requests in a paired run",
                    t.0,
                    r.errors,
                    r.requests
                );
            }
            ra.rps / rb.rps
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

/// A load target: name, URL and an optional header line.
pub type Target = (&'static str, String, Option<String>);

pub fn wrk_threads(
    threads: u32,
    url: &str,
    header: Option<&str>,
    seconds: u32,
    connections: u32,
) -> Wrk {
    let mut cmd = Command::new("wrk");
    cmd.args([
        &format!("-t{threads}"),
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
    };
    let ms = |v: &str| {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => f64::NAN,
        }
    };
    let socket_errors: u64 = field("Socket errors:")
        .map(|s| {
            s.split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Wrk {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50_ms: field("50%").map_or(f64::NAN, |v| ms(&v)),
        p99_ms: field("99%").map_or(f64::NAN, |v| ms(&v)),
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
        errors: field("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            + socket_errors,
    }
}

pub fn median(rs: &[Wrk]) -> Wrk {
    let mut sorted = rs.to_vec();
    sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    sorted[sorted.len() / 2].clone()
}
