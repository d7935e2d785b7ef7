//! `mailstream`: one binary that runs each processor (`mailstream run parser`) and carries the
//! operator commands (`mailstream topology apply`, ...). A thin shell over the service crates.

mod registry;
mod run;
mod topology_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mailstream",
    version,
    about = "Inbound email to CRM data, on Kafka."
)]
struct Cli {
    /// Optional TOML config file; `MAILSTREAM_*` environment variables override it.
    #[arg(long, global = true, env = "MAILSTREAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one processor until SIGTERM/SIGINT.
    Run {
        /// Processor name, as in topology/topology.yaml.
        processor: String,
    },
    /// Validate and apply the topology (topics and schemas).
    Topology {
        #[command(subcommand)]
        command: topology_cmd::TopologyCommand,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = mailstream_runtime::ConfigSource::from_process(cli.config);
    let result = match cli.command {
        Command::Run { processor } => run::run(&processor, source).await,
        Command::Topology { command } => topology_cmd::execute(command, source).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
