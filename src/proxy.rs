//! The Pingora glue. `request_filter` reads top to bottom: route → authenticate → authorize →
//! pick an upstream target; the other hooks forward, count and log. Each step is one call into
//! a plain module; no protocol logic lives here.

use crate::access_log;
use crate::auth::{Authenticator, Denied, Identity, identity, preserve_post};
use crate::config::{Auth, Config, Route, RouteAuth, RouteId};
use crate::connections;
use crate::endpoints::{self, Endpoints};
use crate::http::headers::{self, ClientConn, HeaderSet, request_host};
use crate::http::responses::{Reply, wants_html};
use crate::http::target::{self, Forward};
use crate::http::{cookies, failures};
use crate::metrics::{self, RouteMetrics};
use crate::route_limit::RouteLimits;
use crate::routing::RouteTable;
use crate::telemetry::{self, RequestTrace};
use crate::upstream::{Tried, UpstreamPool};
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use std::ops::ControlFlow::{self, Break, Continue};
use std::time::Instant;

/// The gateway's request handler.
pub struct Gateway {
    config: Config,
    routes: RouteTable,
    pools: std::sync::Arc<[UpstreamPool]>,
    route_metrics: Vec<RouteMetrics>,
    /// Metrics for requests no route took (404, 400).
    unrouted_metrics: RouteMetrics,
    /// Metrics for the gateway's own endpoints (callback, logout, userinfo).
    endpoint_metrics: RouteMetrics,
    /// OpenID Connect, when providers are configured.
    auth: Option<std::sync::Arc<Authenticator>>,
    /// The gateway's own endpoints, when providers are configured.
    endpoints: Option<std::sync::Arc<Endpoints>>,
    /// Identity headers removed from every request.
    scrub: HeaderSet,
    /// Routes' `rate_limit`s.
    limits: RouteLimits,
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    route: Option<RouteId>,
    /// The request-target to send upstream when it differs from what the client sent.
    upstream_target: Option<Vec<u8>>,
    /// The path for the access log when it differs from the `Uri`'s: the canonical path that
    /// was routed, or the escaped raw target of a refused request.
    logged_path: Option<Box<str>>,
    /// The route demands authentication, so `Authorization` is the gateway's to forward.
    authenticated_route: bool,
    /// Request body bytes received so far.
    body_bytes: u64,
    /// The upstream answered `101 Switching Protocols`: the connection is a tunnel now, under
    /// its own idle timeout instead of the body deadlines.
    tunnel: bool,
    tried: Tried,
    target: Option<usize>,
    /// The target chosen in `request_filter` has not been handed to Pingora yet.
    target_pending: bool,
    upstream_start: Option<Instant>,
    /// Answered by one of the gateway's own endpoints.
    own_endpoint: bool,
    /// Who the request is, on an authenticated route.
    identity: Option<Identity>,
    /// Its trace, when `[tracing]` is on.
    trace: Option<RequestTrace>,
}

impl Gateway {
    /// Builds the handler from a validated configuration and the upstream pools built for it.
    pub fn new(
        config: Config,
        pools: std::sync::Arc<[UpstreamPool]>,
        endpoints: Option<std::sync::Arc<Endpoints>>,
        limits: RouteLimits,
    ) -> Self {
        Gateway {
            limits,
            scrub: identity::scrub_set(&config),
            auth: endpoints.as_ref().map(|e| e.authenticator().clone()),
            endpoints,
            endpoint_metrics: RouteMetrics::new(access_log::GATEWAY_ENDPOINT),
            routes: RouteTable::new(&config.routes),
            route_metrics: config
                .routes
                .iter()
                .map(|r| {
                    let m = RouteMetrics::new(&r.name);
                    if matches!(r.auth, Auth::Oidc(_)) {
                        m.init_sessions();
                    }
                    m
                })
                .collect(),
            unrouted_metrics: RouteMetrics::new(access_log::UNROUTED),
            pools,
            config,
        }
    }

    fn route_of(&self, ctx: &Ctx) -> Option<(&Route, &UpstreamPool)> {
        let route = self.config.routes.get(ctx.route?.index())?;
        Some((route, self.pools.get(route.upstream.index())?))
    }

    /// Route → authenticate → authorize → pick a target; or `Break` with a complete answer
    /// (a refusal, or one of the gateway's own endpoints).
    async fn decide(&self, session: &mut Session, ctx: &mut Ctx) -> ControlFlow<Reply> {
        ctx.trace = RequestTrace::start(
            session.req_header(),
            || self.peer_trusted(session),
            ctx.start,
        );
        let req = session.req_header();
        let html = wants_html(&req.headers);
        // What is routed is what is forwarded: the method and target are read once, here, and
        // anything that cannot be canonicalised is refused before any route sees it.
        let target = match target::read(req, self.config.server.allow_encoded_slashes) {
            Ok(target) => target,
            Err(e) => {
                ctx.logged_path = Some(target::escaped_raw(req).into());
                metrics::refused(e.code());
                return Break(Reply::error(
                    400,
                    e.code(),
                    "Bad request",
                    &format!("{e}."),
                    html,
                ));
            }
        };
        if target.path.len() != req.uri.path().len() || target.forward == Forward::Canonical {
            ctx.logged_path = Some(target.path.as_ref().into());
        }
        if let Err(e) = headers::check_framing(&req.method, &req.headers) {
            metrics::refused(e.code());
            return Break(Reply::error(
                400,
                e.code(),
                "Bad request",
                &format!("{e}."),
                html,
            ));
        }

        // The gateway's own endpoints come before any route.
        if let Some(own) = &self.endpoints
            && let Some(endpoint) = own.endpoint(&target.path)
        {
            ctx.own_endpoint = true;
            let served = Box::pin(self.serve_own(session, own, endpoint, html));
            return Break(telemetry::within(ctx.trace.as_ref(), endpoint.name(), served).await);
        }

        let Some(m) = self
            .routes
            .find(request_host(req), &target.path, &req.method)
        else {
            return Break(Reply::error(
                404,
                "not_found",
                "Not found",
                "No route matches this request. Check the address.",
                html,
            ));
        };
        ctx.route = Some(m.route);
        let route = &self.config.routes[m.route.index()];
        if let Some(trace) = &ctx.trace {
            trace.route(req.method.as_str(), &route.name);
        }
        let forwarded = if route.strip_path {
            match &target.path[m.rest..] {
                "" => "/",
                rest => rest,
            }
        } else {
            &target.path
        };
        ctx.upstream_target = target.upstream_bytes(forwarded);

        if let Auth::Oidc(spec) = &route.auth {
            let Some(auth) = &self.auth else {
                return Break(Reply::error(
                    500,
                    "misconfigured",
                    "Server error",
                    "Authentication is not configured.",
                    html,
                ));
            };
            let query = target.query.map(String::from_utf8_lossy);
            let return_to = target::with_query(&target.path, query.as_deref());
            let authenticate = auth.authenticate(
                spec,
                req,
                self.client_ip(session),
                connections::client_cert_digest(session),
                &return_to,
                &self.route_metrics[m.route.index()],
            );
            let authenticated =
                telemetry::within(ctx.trace.as_ref(), "authenticate", authenticate).await;
            ctx.identity = match (authenticated, route.preserve_post) {
                (Ok(identity), _) => identity,
                (Err(denied), Some(max)) if denied.needs_session() => {
                    let kept = self.sign_in_keeping_post(session, auth, spec, max, &return_to);
                    let answer = match kept.await {
                        Some(sign_in) => sign_in.with_cookies(denied.cookies),
                        None => denied,
                    };
                    return Break(answer.render(html));
                }
                (Err(denied), _) => return Break(denied.render(html)),
            };
            ctx.authenticated_route = true;
        }
        if route.rate_limit.is_some() {
            let client = self.client_ip(session);
            let check = self.limits.check(m.route, ctx.identity.as_mut(), client);
            if let Err(too_many) = check.await {
                return Break(too_many);
            }
        }

        self.choose_target(session, ctx, html)
    }

    /// Answers a request to one of the gateway's own endpoints, reading its body first when it
    /// takes one: small, and whole within the body deadline (no slow drip holds the connection).
    async fn serve_own(
        &self,
        session: &mut Session,
        own: &Endpoints,
        endpoint: endpoints::Endpoint,
        html: bool,
    ) -> Reply {
        let client = self.client_ip(session);
        let from_proxy = self.peer_trusted(session);
        let body = if endpoint.reads_body() {
            let read = crate::http::body::read_limited(session, endpoints::MAX_BODY);
            tokio::time::timeout(self.config.server.request_body_timeout, read)
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let req = session.req_header();
        own.serve(endpoint, req, client, from_proxy, html, body.as_deref())
            .await
    }

    /// A form posted without a session to a `preserve_post` route: read, within `max` bytes and
    /// the body deadline, and kept for the sign-in it starts. `None`: not such a form, and the
    /// request is refused as before.
    async fn sign_in_keeping_post(
        &self,
        session: &mut Session,
        auth: &Authenticator,
        spec: &RouteAuth,
        max: usize,
        return_to: &str,
    ) -> Option<Denied> {
        let req = session.req_header();
        if !preserve_post::qualifies(req, max)
            || !preserve_post::origin_has_scheme(req, auth.site_scheme(spec))
        {
            return None;
        }
        let read = crate::http::body::read_limited(session, max);
        let body = tokio::time::timeout(self.config.server.request_body_timeout, read).await;
        let Some(body) = body.ok().flatten() else {
            // Part of the body may be unread: the connection cannot carry another request.
            session.set_keepalive(None);
            return None;
        };
        let client = self.client_ip(session);
        let denied =
            auth.sign_in_keeping_post(spec, session.req_header(), client, return_to, &body);
        Some(denied.await)
    }

    /// Whether the peer is one of `trusted_proxies`.
    fn peer_trusted(&self, session: &Session) -> bool {
        headers::is_trusted(peer_ip(session), &self.config.server.trusted_proxies)
    }

    /// The client's address, believing `X-Forwarded-For` only from trusted proxies.
    fn client_ip(&self, session: &Session) -> Option<std::net::IpAddr> {
        headers::client_ip(
            peer_ip(session),
            &session.req_header().headers,
            &self.config.server.trusted_proxies,
        )
    }

    /// Picks the first target, so "nothing healthy" is a clean 503 on a reusable connection.
    fn choose_target(&self, session: &Session, ctx: &mut Ctx, html: bool) -> ControlFlow<Reply> {
        let Some((_, pool)) = self.route_of(ctx) else {
            return Continue(());
        };
        match pool.select_for(
            session.client_addr().and_then(|a| a.as_inet()),
            &session.req_header().headers,
            ctx.tried,
        ) {
            Some(idx) => {
                ctx.tried.insert(idx);
                ctx.target = Some(idx);
                ctx.target_pending = true;
                Continue(())
            }
            None => Break(failures::reply(503, html)),
        }
    }
}

/// The address of the connection's peer (a client, or a proxy in front).
fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {
        // Pingora's default adds a response-compression module, disabled, which still costs an
        // allocation and two filter calls per request; the gateway never compresses.
    }

    fn new_ctx(&self) -> Ctx {
        // Pingora makes the context right after reading the request header.
        connections::header_read();
        Ctx {
            start: Instant::now(),
            route: None,
            upstream_target: None,
            logged_path: None,
            authenticated_route: false,
            body_bytes: 0,
            tunnel: false,
            tried: Tried::default(),
            target: None,
            target_pending: false,
            upstream_start: None,
            own_endpoint: false,
            identity: None,
            trace: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // Pingora's per-read timeout (60 s by default) is the body's idle limit; the rate is
        // checked as the body arrives (`request_body_filter`). Every request is under them,
        // whatever its headers say: an `Upgrade:` header is only a request, and its body stays
        // a body until the upstream answers 101 (`response_filter`).
        let s = &self.config.server;
        session.set_read_timeout(Some(s.request_body_timeout));
        // A client that does not read its answer holds a connection slot only so long.
        session.set_write_timeout(Some(s.response_write_timeout));
        if s.response_min_send_rate > 0 {
            session.set_min_send_rate(Some(s.response_min_send_rate));
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.tunnel {
            return Ok(());
        }
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        let s = &self.config.server;
        if failures::body_too_slow(
            ctx.start.elapsed(),
            ctx.body_bytes,
            s.request_body_timeout,
            s.request_body_min_rate,
        ) {
            metrics::refused("body_too_slow");
            return Err(Error::explain(
                HTTPStatus(408),
                "the request body arrived more slowly than request_body_min_rate",
            ));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match self.decide(session, ctx).await {
            Continue(()) => Ok(false),
            Break(reply) => {
                reply.send(session).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some((_, pool)) = self.route_of(ctx) else {
            return Err(Error::explain(InternalError, "no route chosen"));
        };
        let idx = if std::mem::take(&mut ctx.target_pending) {
            ctx.target
        } else {
            // A retry after a failed connect: another healthy target, never one already tried.
            let idx = pool.select_for(
                session.client_addr().and_then(|a| a.as_inet()),
                &session.req_header().headers,
                ctx.tried,
            );
            if let Some(i) = idx {
                ctx.tried.insert(i);
            }
            idx
        };
        let Some(idx) = idx else {
            return Err(Error::explain(
                HTTPStatus(502),
                "no other healthy upstream target to retry",
            ));
        };
        ctx.target = Some(idx);
        ctx.upstream_start = Some(Instant::now());
        if let Some(trace) = &mut ctx.trace {
            trace.upstream_attempt(&pool.name, pool.target_label(idx));
        }
        pool.peer(idx)
            .ok_or_else(|| Error::explain(InternalError, "upstream target index out of range"))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some((_, pool)), Some(idx)) = (self.route_of(ctx), ctx.target) {
            pool.connect_failed(idx);
            tracing::warn!(upstream = %pool.name, target = pool.target_label(idx), error = %e, "upstream connect failed");
            if ctx.tried.count() <= pool.retries && ctx.tried.count() < pool.len() {
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some((route, pool)) = self.route_of(ctx) else {
            return Ok(());
        };
        if let Some(t) = ctx.upstream_target.take() {
            upstream_req.set_raw_path(&t)?;
        }
        headers::collapse_content_length(upstream_req)?;
        let ip = peer_ip(session);
        let conn = ClientConn {
            ip,
            trusted: headers::is_trusted(ip, &self.config.server.trusted_proxies),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
            host: request_host(session.req_header()),
        };
        headers::set_forwarded(upstream_req, &conn)?;
        if !route.preserve_host {
            upstream_req.insert_header(http::header::HOST, pool.host_header.clone())?;
        }
        // Identity is the gateway's to state: whatever the client sent is removed first.
        headers::scrub(upstream_req, &self.scrub);
        if let Some(auth) = &self.auth {
            cookies::strip(upstream_req, |name| auth.is_own_cookie(name));
            if ctx.authenticated_route {
                auth.identify(ctx.identity.as_ref(), upstream_req, &pool.name)?;
            }
        }
        if let Some(trace) = &ctx.trace {
            trace.inject(upstream_req);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && session.is_upgrade_req() {
            // The upstream agreed: from here on the client's bytes are a tunnel's traffic,
            // which may rightly be idle for a while.
            ctx.tunnel = true;
            session.set_read_timeout(Some(self.config.server.tunnel_idle_timeout));
        }
        if let Some(id) = &mut ctx.identity {
            for c in id.set_cookies.drain(..) {
                resp.append_header(http::header::SET_COOKIE, c)?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some((_, pool)), Some(start)) = (self.route_of(ctx), ctx.upstream_start) {
            pool.duration.observe(start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let status = failures::status(e);
        if status > 0 && session.response_written().is_none() {
            let html = wants_html(&session.req_header().headers);
            // Pingora closes the client connection after a failed proxy attempt; say so, so
            // HTTP/1 clients do not race a reused connection against the close.
            session.set_keepalive(None);
            let _ = failures::reply(status, html).send(session).await;
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _error: &Error) -> bool {
        // `logging` reports every request once, at a level that fits its outcome.
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| e.map(failures::status))
            .unwrap_or(0);
        let elapsed = ctx.start.elapsed();
        if let Some(trace) = ctx.trace.take() {
            trace.finish(status);
        }
        let route = self.route_of(ctx);
        let metrics = match ctx.route.and_then(|i| self.route_metrics.get(i.index())) {
            Some(m) => m,
            None if ctx.own_endpoint => &self.endpoint_metrics,
            None => &self.unrouted_metrics,
        };
        metrics.observe(status, elapsed.as_secs_f64());
        if self.config.log.access_log || e.is_some() {
            let req = session.req_header();
            let target = match (route, ctx.target) {
                (Some((_, pool)), Some(i)) => pool.target_label(i),
                _ => "",
            };
            access_log::log(&access_log::Entry {
                user: ctx.identity.as_ref().and_then(|i| i.sub()),
                method: req.method.as_str(),
                path: ctx.logged_path.as_deref().unwrap_or(req.uri.path()),
                route: match route {
                    Some((r, _)) => r.name.as_str(),
                    None if ctx.own_endpoint => access_log::GATEWAY_ENDPOINT,
                    None => access_log::UNROUTED,
                },
                status,
                upstream: route.map_or("", |(_, p)| &p.name),
                target,
                duration: elapsed,
                client: peer_ip(session),
                error: e,
            });
        }
    }
}
