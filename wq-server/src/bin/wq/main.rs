//! `wq`: run the service, or look at and fix queues from a shell.
//!
//! Every command opens the backend named by `--backend` (memory, postgres
//! or redis) at `--url`, in the schema or key prefix `--namespace`; each
//! option also reads an environment variable (`WQ_BACKEND`, `WQ_URL`,
//! `WQ_NAMESPACE`, `WQ_TOKEN`, `WQ_LISTEN`, ...).

mod config;
mod ops;
mod serve;

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use wq::Backend;

/// Durable WhatsApp message queues: the service and its operator's tools.
#[derive(Parser, Debug)]
#[command(name = "wq", version)]
struct Cli {
    /// A TOML file of options (see the docs); flags and environment
    /// variables win over it.
    #[arg(long, env = "WQ_CONFIG", global = true)]
    config: Option<std::path::PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the queues live.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The backend.
    #[arg(
        long,
        env = "WQ_BACKEND",
        value_enum,
        default_value = "memory",
        global = true
    )]
    pub(crate) backend: BackendKind,
    /// The server's URL (Postgres or Redis); defaults to WQ_POSTGRES_URL or
    /// WQ_REDIS_URL, then to the local server.
    #[arg(long, env = "WQ_URL", global = true, hide_env_values = true)]
    pub(crate) url: Option<String>,
    /// The Postgres schema or Redis key prefix.
    #[arg(long, env = "WQ_NAMESPACE", default_value = "wq", global = true)]
    pub(crate) namespace: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum BackendKind {
    /// In this process only: for a demo or a test.
    Memory,
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API, /health, /ready and /metrics.
    Serve(serve::ServeArgs),
    /// Create or update the schema (Postgres; the others need none).
    Migrate,
    /// Queues with their counts by state.
    Stats,
    /// Jobs: list, show, cancel.
    #[command(subcommand)]
    Jobs(ops::JobsCommand),
    /// The dead-letter queue: list, retry, purge.
    #[command(subcommand)]
    Dead(ops::DeadCommand),
    /// Stop claiming from a queue, or a session of it.
    Pause(ops::PauseArgs),
    /// Claim from a queue, or a session of it, again.
    Resume(ops::PauseArgs),
    /// Delete finished jobs past their queue's retention.
    Prune,
}

/// What a command may fail with.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match parse() {
        Ok(cli) => finish(open(cli).await),
        Err(e) => finish(Err(e)),
    }
}

/// The arguments, completed from the configuration file if one is named.
fn parse() -> Result<Cli, Failure> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(path) = &cli.config {
        let file = config::File::load(path)?;
        file.apply_store(&mut cli.store, &matches)?;
        if let (Command::Serve(args), Some(("serve", m))) = (&mut cli.command, matches.subcommand())
        {
            file.apply_serve(args, m);
        }
    }
    Ok(cli)
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wq: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the backend and runs the command on it.
async fn open(cli: Cli) -> Result<(), Failure> {
    let StoreArgs {
        backend,
        url,
        namespace,
    } = cli.store.clone();
    match backend {
        // A fresh in-process store holds nothing an operator could look at.
        BackendKind::Memory if !matches!(cli.command, Command::Serve(_) | Command::Migrate) => Err(
            "the memory backend lives inside one process and this command would see it empty: \
             give --backend postgres or redis (or WQ_BACKEND)"
                .into(),
        ),
        #[cfg(feature = "memory")]
        BackendKind::Memory => run(wq::MemoryStore::new(), cli.command).await,
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => {
            let url = url
                .or_else(|| std::env::var("WQ_POSTGRES_URL").ok())
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let store = wq::PgStore::connect(&url, &namespace).await?;
            run(store, cli.command).await
        }
        #[cfg(feature = "redis")]
        BackendKind::Redis => {
            let url = url
                .or_else(|| std::env::var("WQ_REDIS_URL").ok())
                .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
            let store = wq::RedisStore::connect(&url, &namespace).await?;
            run(store, cli.command).await
        }
        #[allow(unreachable_patterns)]
        other => {
            let _ = (url, namespace);
            Err(format!("this build of wq has no {other:?} backend (see its features)").into())
        }
    }
}

async fn run<B: Backend>(store: B, command: Command) -> Result<(), Failure> {
    let client = wq::Client::new(store.clone());
    match command {
        Command::Serve(args) => serve::serve(store, client, args).await,
        // Opening the store applied the migrations.
        Command::Migrate => {
            println!("the schema is up to date");
            Ok(())
        }
        Command::Stats => ops::stats(&client).await,
        Command::Jobs(c) => ops::jobs(&client, c).await,
        Command::Dead(c) => ops::dead(&client, c).await,
        Command::Pause(a) => ops::pause(&client, a, true).await,
        Command::Resume(a) => ops::pause(&client, a, false).await,
        Command::Prune => ops::prune(&store).await,
    }
}
