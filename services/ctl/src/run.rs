//! `mailstream run <processor>`: starts one processor of the topology.

use std::process::ExitCode;

use anyhow::bail;
use mailstream_crm_sink::CrmSinkSettings;
use mailstream_parser::{Parser, ParserSettings};
use mailstream_passthrough::Passthrough;
use mailstream_runtime::{ConfigSource, NoSettings, serve};

/// Runs the named processor until it is asked to stop.
pub async fn run(processor: &str, source: ConfigSource) -> anyhow::Result<ExitCode> {
    match processor {
        "passthrough" => serve(source, |_, _: NoSettings| async { Ok(Passthrough) }).await?,
        "ingest" => mailstream_ingest::serve(source).await?,
        "parser" => {
            serve(source, |ctx, settings: ParserSettings| async move {
                Parser::new(settings, &ctx.config.blob_options(), &ctx.metrics.registry)
            })
            .await?
        }
        "resolver" => serve(source, mailstream_resolver::build).await?,
        "scorer" => serve(source, mailstream_scorer::build).await?,
        "crm-sink" => {
            serve(source, |ctx, settings: CrmSinkSettings| {
                mailstream_crm_sink::build(ctx, settings)
            })
            .await?
        }
        "notifier" => serve(source, mailstream_notifier::build).await?,
        other => bail!(
            "unknown processor `{other}`; this build runs: ingest, parser, resolver, scorer, crm-sink, notifier, passthrough (see `mailstream topology check`)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
