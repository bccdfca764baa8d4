//! Listening addresses checked before the server starts. Pingora retries a port in use every
//! second for ever, and with `--daemon` the parent has already exited 0 by then: a gateway that
//! serves nothing would look healthy to systemd. So every address is bound once here first; a
//! failure is an error naming the address and, when this user may see it, the process that
//! holds it.

use std::net::{SocketAddr, TcpListener};

/// Binds each address in `addrs` once and lets it go; the first that cannot be bound, as a
/// message for the operator.
pub fn check(addrs: &[SocketAddr]) -> Result<(), String> {
    for addr in addrs {
        if let Err(e) = TcpListener::bind(addr) {
            let owner = match e.kind() {
                std::io::ErrorKind::AddrInUse => holder(addr)
                    .map(|(pid, name)| format!(" (held by pid {pid}, {name})"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return Err(format!("cannot listen on {addr}: {e}{owner}"));
        }
    }
    Ok(())
}

/// The process listening on `addr`, from `/proc` (Linux; only processes this user may inspect).
fn holder(addr: &SocketAddr) -> Option<(u32, String)> {
    let inode = listening_inode(addr)?;
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == &*wanted));
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|n| n.trim().to_owned())
                .unwrap_or_else(|_| "?".into());
            return Some((pid, name));
        }
    }
    None
}

/// The inode of the socket listening on `addr` (or on the wildcard address of its port).
fn listening_inode(addr: &SocketAddr) -> Option<u64> {
    let table = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    let port = format!(":{:04X}", addr.port());
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local_address, then st (0A: LISTEN), then the inode in the tenth column.
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        (local.ends_with(&port) && *state == "0A")
            .then(|| inode.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_names_its_address_and_holder() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = check(&[addr]).unwrap_err();
        assert!(e.contains(&addr.to_string()), "{e}");
        assert!(
            e.contains(&format!("pid {}", std::process::id())),
            "the holder is this test process: {e}"
        );
        drop(held);
        assert_eq!(check(&[addr]), Ok(()));
    }
}
