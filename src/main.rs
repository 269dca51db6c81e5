//! `dataplane`: the one binary of the Hexabase data plane.
//!
//! This is the composition root only: it parses the command line and configuration, builds the
//! parts (store, write-ahead log, pipeline, routers) and runs the shutdown sequence. Business
//! logic lives in the crates: `ingest`, `storage`, `schemas` (and `query`, `aiops`, `sandbox`,
//! `control` as they are built).

mod config;
mod serve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the ingest path allocates many short strings per event,
/// and glibc's free-list consolidation was a third of its CPU (see `bench/`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "dataplane", version, about = "Hexabase observability data plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// TOML configuration file (environment variables `DATAPLANE_*` override it).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (write-ahead log, embedded store).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: ingest endpoints, health, readiness and metrics.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Listen address, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply the storage schema (ClickHouse DDL); running it again is a no-op.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Print a token of the local development issuer, accepted by a server on the same data
    /// directory (only when no OIDC issuer is configured).
    Token {
        #[command(flatten)]
        common: Common,
        /// The user (`sub`).
        #[arg(long)]
        user: String,
        /// The organisation (`org_id`).
        #[arg(long)]
        org: String,
        /// A workspace the user belongs to (repeat for more).
        #[arg(long = "workspace")]
        workspaces: Vec<String>,
        /// A group (repeat for more).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A role, e.g. auditor or platform-operator (repeat for more).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Kubernetes manifests.
    Manifest {
        #[command(subcommand)]
        action: ManifestAction,
    },
    /// Check or print the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ManifestAction {
    /// Check the manifest on stdin (YAML documents or JSON) against Kubernetes' typed schemas;
    /// exits 1 when a document has errors. Nothing is applied.
    Validate {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the configuration and exit non-zero with the key at fault if it is wrong.
    Check {
        #[command(flatten)]
        common: Common,
    },
    /// Print the effective configuration (file + environment + defaults), secrets redacted.
    Print {
        #[command(flatten)]
        common: Common,
    },
}

fn load(common: &Common, listen: Option<String>) -> anyhow::Result<config::Config> {
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    let mut c = config::load(common.config.as_deref(), &vars)?;
    if let Some(d) = &common.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(l) = listen {
        c.listen = l;
    }
    c.ingest.validate()?;
    c.auth.validate(&c.data_dir).map_err(anyhow::Error::msg)?;
    c.prometheus.validate().map_err(anyhow::Error::msg)?;
    Ok(c)
}

/// `dataplane manifest validate`: the report on stdin's manifest (also what the assistant runs,
/// jailed).
fn validate_manifest(json: bool) -> ExitCode {
    use std::io::Read;
    let mut text = String::new();
    let limit = aiops::manifest::MAX_BYTES as u64 + 1;
    if let Err(e) = std::io::stdin().take(limit).read_to_string(&mut text) {
        eprintln!("error: the manifest on stdin: {e}");
        return ExitCode::from(2);
    }
    let report = aiops::manifest::check(&text);
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        if let Some(e) = &report.error {
            println!("error: {e}");
        }
        for d in &report.documents {
            println!("{} {}/{}: {}", d.kind, d.namespace.as_deref().unwrap_or("-"), d.name, if d.valid { "valid" } else { "INVALID" });
            for e in &d.errors {
                println!("  error: {e}");
            }
            for w in &d.warnings {
                println!("  warning: {w}");
            }
        }
    }
    if report.valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn main() -> ExitCode {
    ingest::keep_freed_memory();
    // One process-wide TLS provider (AWS-LC) for every outbound HTTPS client (OIDC keys, kube).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    auth::jwt_crypto::install();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { common, listen } => load(&common, listen).and_then(serve::run),
        Command::Migrate { common } => load(&common, None).and_then(serve::migrate),
        Command::Token { common, user, org, workspaces, groups, roles, ttl } => load(&common, None).and_then(|c| {
            let ttl_secs = query::params::parse_duration_ns(&ttl).map(|ns| (ns / 1_000_000_000) as u64).filter(|s| *s > 0);
            let ttl_secs = ttl_secs.ok_or_else(|| anyhow::anyhow!("--ttl: `{ttl}` is not a duration like 30m, 1h or 7d"))?;
            let claims = auth::DevClaims { user, org, workspaces, groups, roles, ttl_secs, binding: None };
            println!("{}", serve::development_token(&c, &claims)?);
            Ok(())
        }),
        Command::Openapi => serde_json::to_string_pretty(&schemas::openapi::document()).map(|s| println!("{s}")).map_err(Into::into),
        Command::Manifest { action: ManifestAction::Validate { json } } => return validate_manifest(json),
        Command::Config { action: ConfigAction::Check { common } } => load(&common, None).map(|_| println!("configuration is valid")),
        Command::Config { action: ConfigAction::Print { common } } => load(&common, None).and_then(|c| {
            print!("{}", toml::to_string_pretty(&config::redacted(&c))?);
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
