//! `oidc-gateway`: run the gateway, or check a configuration.

use clap::{Parser, Subcommand, ValueEnum};
use oidc_gateway::config::Config;
use oidc_gateway::server::{self, RunMode};
use oidc_gateway::signals;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An edge reverse proxy that puts OpenID Connect login in front of any HTTP service.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    ///
    /// Signals: SIGTERM drains in-flight requests for `server.grace_period`, then exits;
    /// SIGQUIT hands the listening sockets to a new process started with `--upgrade`
    /// (zero-downtime upgrade and config reload), also when it comes while this process is
    /// still starting (it is then answered once the process serves); SIGINT exits at once.
    Run {
        /// Configuration file. Single keys may be set from the environment too:
        /// `OIDC_GATEWAY__SERVER__MAX_CONNECTIONS=5000` (see `check --print-effective`).
        #[arg(
            short,
            long,
            env = "OIDC_GATEWAY_CONFIG",
            default_value = "conf/oidc-gateway.toml"
        )]
        config: PathBuf,
        /// Take over the listening sockets of a running instance, which must then get SIGQUIT.
        #[arg(short, long)]
        upgrade: bool,
        /// Detach from the terminal and write `server.pid_file` (for systemd `Type=forking`).
        #[arg(short, long)]
        daemon: bool,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Run the whole product locally: the gateway, a built-in development OpenID Provider and a
    /// demo upstream page, all on 127.0.0.1. DEVELOPMENT ONLY. No account anywhere needed.
    Demo(DemoArgs),
    /// Run only the development OpenID Provider (DEVELOPMENT ONLY), for trying the configuration
    /// `demo --print-config` prints with `oidc-gateway run`. The `demo` client's secret is read
    /// from the CLIENT_SECRET environment variable, as that configuration expects.
    DevIdp {
        /// IdP port.
        #[arg(long, default_value_t = 8081)]
        port: u16,
        /// Port of the gateway whose callback is registered for the `demo` client.
        #[arg(long, default_value_t = 8080)]
        gateway_port: u16,
        /// Lifetime of the access tokens it issues, in seconds.
        #[arg(long, default_value_t = 300)]
        access_token_ttl: u64,
    },
    /// Run only the demo app (DEVELOPMENT ONLY): the page that shows what the upstream received,
    /// the upstream of the configuration `demo --print-config` prints.
    DemoApp {
        /// Port, on 127.0.0.1.
        #[arg(long, default_value_t = 8082)]
        port: u16,
    },
    /// Call a running gateway's admin API (`[admin]`). The bearer token is read from the
    /// OIDC_GATEWAY_ADMIN_TOKEN environment variable, or from the file --token-file names.
    Admin(AdminArgs),
    /// Validate a configuration file: print a one-line summary and exit 0, or print every
    /// error (file:line:column: key: problem) and exit 1. Warnings (settings that work but are
    /// probably not meant) are printed too, with exit 0.
    Check {
        /// Configuration file.
        #[arg(
            short,
            long,
            env = "OIDC_GATEWAY_CONFIG",
            default_value = "conf/oidc-gateway.toml"
        )]
        config: PathBuf,
        /// Print the configuration in effect (the file with the `OIDC_GATEWAY__*` environment
        /// overrides written in), secrets masked, before checking it.
        #[arg(long)]
        print_effective: bool,
    },
}

/// `admin`'s options.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin API's address.
    #[arg(
        long,
        env = "OIDC_GATEWAY_ADMIN_URL",
        default_value = "http://127.0.0.1:9465"
    )]
    url: String,
    /// A file holding the bearer token (instead of OIDC_GATEWAY_ADMIN_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    call: AdminCall,
}

#[derive(Subcommand)]
enum AdminCall {
    /// Version, config digest, providers, upstreams, Redis, readiness.
    Status,
    /// A user's sessions (created, last seen, expiry, provider session; never a token).
    Sessions {
        /// The user (`sub`).
        #[arg(long)]
        sub: String,
        /// Only this provider's sessions.
        #[arg(long)]
        provider: Option<String>,
    },
    /// End a user's sessions (--sub), or one session (--session, an id `sessions` lists), on
    /// every instance.
    Revoke {
        /// The user (`sub`) whose sessions all end.
        #[arg(long, conflicts_with = "session", required_unless_present = "session")]
        sub: Option<String>,
        /// One session's id.
        #[arg(long)]
        session: Option<String>,
        /// Only this provider's sessions (with --sub).
        #[arg(long, requires = "sub")]
        provider: Option<String>,
    },
    /// Validate a configuration file with the running gateway (the same errors as `check`).
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
}

/// `demo`'s options.
#[derive(clap::Args)]
struct DemoArgs {
    /// Gateway port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Development IdP port.
    #[arg(long, default_value_t = 8081)]
    idp_port: u16,
    /// Demo upstream port.
    #[arg(long, default_value_t = 8082)]
    upstream_port: u16,
    /// Metrics port.
    #[arg(long, default_value_t = 9464)]
    metrics_port: u16,
    /// Print the equivalent configuration file and exit.
    #[arg(long)]
    print_config: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            config,
            upgrade,
            daemon,
            log_format,
        } => run(&config, RunMode { upgrade, daemon }, log_format),
        Command::Check {
            config,
            print_effective,
        } => check(&config, print_effective),
        Command::Admin(args) => admin(args),
        Command::Demo(args) => dev::demo(&args),
        Command::DevIdp {
            port,
            gateway_port,
            access_token_ttl,
        } => dev::dev_idp(port, gateway_port, access_token_ttl),
        Command::DemoApp { port } => dev::demo_app(port),
    }
}

/// `run`: the gateway itself.
fn run(config: &Path, mode: RunMode, log_format: LogFormat) -> ExitCode {
    // First: a reload's SIGQUIT may come while this process is still starting.
    let quit = match signals::catch_early_quit() {
        Ok(q) => q,
        Err(e) => {
            eprintln!("cannot install the SIGQUIT handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    // A daemon forks after this point: a background log writer thread would not survive it.
    let _guard = oidc_gateway::logging::init(
        &config.log.level,
        matches!(log_format, LogFormat::Json),
        !mode.daemon,
    );
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    pingora::tls::install_default_crypto_provider();
    let server = match server::build(config, mode) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    signals::run_forever(server, quit);
}

/// `admin`: one call to a running gateway's admin API; the answer on stdout.
fn admin(args: AdminArgs) -> ExitCode {
    use oidc_gateway::admin_api::client::{self, Request};
    let token = match &args.token_file {
        Some(f) => std::fs::read_to_string(f)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", f.display())),
        None => std::env::var("OIDC_GATEWAY_ADMIN_TOKEN").map_err(|_| {
            "set OIDC_GATEWAY_ADMIN_TOKEN to an admin bearer token, or pass --token-file".to_owned()
        }),
    };
    let request = match args.call {
        AdminCall::Status => Ok(Request::Status),
        AdminCall::Sessions { sub, provider } => Ok(Request::Sessions { sub, provider }),
        AdminCall::Revoke {
            sub: Some(sub),
            provider,
            ..
        } => Ok(Request::RevokeUser { sub, provider }),
        AdminCall::Revoke { session, .. } => Ok(Request::RevokeSession {
            id: session.unwrap_or_default(),
        }),
        AdminCall::CheckConfig { file } => std::fs::read_to_string(&file)
            .map(|text| Request::CheckConfig { text })
            .map_err(|e| format!("cannot read {}: {e}", file.display())),
    };
    let sent = token.and_then(|token| {
        let request = request?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(client::send(&args.url, &token, request))
    });
    match sent {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `check`: validate a configuration file.
fn check(config: &Path, print_effective: bool) -> ExitCode {
    let loaded = print_effective
        .then(|| Config::effective_source(config))
        .transpose()
        .and_then(|effective| {
            if let Some((text, _)) = effective {
                print!("{}", oidc_gateway::config::env::masked(&text));
            }
            Config::load(config)
        });
    match loaded {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}", c.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", config.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

/// The development-only subcommands, built with the `demo` cargo feature (on by default).
#[cfg(feature = "demo")]
mod dev {
    use super::{DemoArgs, LogFormat};
    use oidc_gateway::demo::{self, DemoPorts};
    use pingora::server::Server;
    use std::process::ExitCode;

    /// `demo`: the gateway, the development IdP and the demo app, together.
    pub fn demo(args: &DemoArgs) -> ExitCode {
        let ports = DemoPorts {
            gateway: args.port,
            idp: args.idp_port,
            upstream: args.upstream_port,
            metrics: args.metrics_port,
        };
        if args.print_config {
            print!("{}", demo::printed_config(&ports));
            return ExitCode::SUCCESS;
        }
        let json = matches!(args.log_format, LogFormat::Json);
        let _guard = oidc_gateway::logging::init("info", json, true);
        pingora::tls::install_default_crypto_provider();
        serve(demo::build(&ports), || demo::banner(&ports))
    }

    /// `dev-idp`: the development IdP alone.
    pub fn dev_idp(port: u16, gateway_port: u16, access_token_ttl: u64) -> ExitCode {
        let Ok(secret) = std::env::var("CLIENT_SECRET") else {
            eprintln!(
                "set CLIENT_SECRET to the demo client's secret (the same value the gateway's config uses)"
            );
            return ExitCode::FAILURE;
        };
        let _guard = oidc_gateway::logging::init("info", false, true);
        let ports = DemoPorts {
            gateway: gateway_port,
            idp: port,
            ..Default::default()
        };
        serve(
            demo::dev_idp_server(&ports, &secret, access_token_ttl),
            || {
                format!(
                    "development IdP on http://127.0.0.1:{port} (development only): users alice / wonderland, bob / builder\n{}",
                    demo::dev_idp_settings(&ports)
                )
            },
        )
    }

    /// `demo-app`: the demo upstream page alone.
    pub fn demo_app(port: u16) -> ExitCode {
        let _guard = oidc_gateway::logging::init("info", false, true);
        serve(demo::demo_app_server(port), || {
            format!("demo app on http://127.0.0.1:{port} (development only)")
        })
    }

    /// Prints the banner and serves, or prints why the server could not be built.
    fn serve(server: Result<Server, String>, banner: impl FnOnce() -> String) -> ExitCode {
        match server {
            Ok(server) => {
                println!("{}", banner());
                server.run_forever();
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// A production build (`--no-default-features`) leaves the development IdP and the demo out;
/// their subcommands stay, and say so.
#[cfg(not(feature = "demo"))]
mod dev {
    use super::DemoArgs;
    use std::process::ExitCode;

    fn left_out() -> ExitCode {
        eprintln!(
            "this oidc-gateway was built without the `demo` cargo feature: the demo, the development IdP and the demo app are left out (build with default features to have them)"
        );
        ExitCode::FAILURE
    }

    pub fn demo(_: &DemoArgs) -> ExitCode {
        left_out()
    }

    pub fn dev_idp(_: u16, _: u16, _: u64) -> ExitCode {
        left_out()
    }

    pub fn demo_app(_: u16) -> ExitCode {
        left_out()
    }
}
