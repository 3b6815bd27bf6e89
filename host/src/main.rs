//! The `ioplex` binary: with no arguments it serves the embedded default (one node, in-memory adapter,
//! every namespace open, the client contract) on 0.0.0.0:3000. Each command lives in [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, LogFormat, PluginCommand};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let ok = match cli.command {
        Some(Command::Plugin(PluginCommand::Check { file, manifest })) => {
            cli::init_tracing(LogFormat::Text);
            cli::plugin_check::check_plugin(&file, manifest.as_deref())?
        }
        Some(Command::Tenants {
            config,
            plugins_dir,
            url,
        }) => {
            cli::init_tracing(LogFormat::Text);
            cli::tenants::run(config.as_deref(), plugins_dir.as_deref(), url.as_deref()).await?
        }
        Some(Command::Serve(args)) => serve(*args).await?,
        None => serve(cli.serve).await?,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve(args: cli::ServeArgs) -> anyhow::Result<bool> {
    cli::init_tracing(args.log_format);
    cli::serve::run(args).await?;
    Ok(true)
}
