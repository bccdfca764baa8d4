//! Reading a whole (small) request body, for the few endpoints that need one.

use pingora::protocols::http::ServerSession;

/// The request body, or `None` when it is larger than `max` bytes or cannot be read.
pub async fn read_limited(session: &mut ServerSession, max: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(body),
            Err(_) => return None,
        }
    }
}
