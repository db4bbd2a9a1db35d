//! `hpki mail`, `hpki crl`, `hpki print`: the processors run once from the command line,
//! under the same lease as `hpki serve`'s, and the auditor's CRL reproduction.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use hpki_backoffice::clock::SharedClock;
use hpki_backoffice::config::Config;
use hpki_backoffice::processors::{self, Processors, crl_publisher};
use hpki_backoffice::serve;

#[derive(Subcommand)]
pub enum MailCommand {
    /// Send every mail that is due now, then exit.
    Send,
}

#[derive(Subcommand)]
pub enum CrlCommand {
    /// Publish every CRL that is due now (none yet, a revocation since, or the schedule).
    Publish,
    /// Make CRL number N again from the log as it stood and compare it, byte for byte, with
    /// the SHA-256 recorded when it was published. Exits 0 when identical, 1 when not.
    Reproduce {
        #[arg(long)]
        authority: String,
        #[arg(long)]
        number: u64,
        /// Also write the DER made again here.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum PrintCommand {
    /// Make a print batch of an authority's QRs waiting to be printed.
    Create {
        #[arg(long)]
        authority: String,
        /// Who asks, recorded in the log.
        #[arg(long, default_value = "system:cli")]
        actor: String,
    },
    /// Make the batches `print.schedule` calls for now (what `hpki serve` does at each
    /// scheduled time).
    Scheduled,
}

pub enum Outputs {
    Mail(MailCommand),
    Crl(CrlCommand),
    Print(PrintCommand),
}

fn busy(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the {name} processor is running in another instance right now; try again shortly"
    )
}

pub async fn run(
    command: Outputs,
    config: &Config,
    clock: SharedClock,
) -> anyhow::Result<ExitCode> {
    let store = serve::open_store(config, clock.clone()).await?;
    let office = serve::office(config, store.clone(), clock).await?;
    let processors = Processors::new(&office, config)?;
    let print = |value: serde_json::Value| {
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
    };
    match command {
        Outputs::Mail(MailCommand::Send) => {
            let (report, _) = processors::exclusively(&store, "outbox", processors.outbox.step())
                .await?
                .ok_or_else(|| busy("outbox"))?;
            print(
                serde_json::json!({"sent": report.sent, "deferred": report.deferred, "failed": report.failed}),
            );
        }
        Outputs::Crl(CrlCommand::Publish) => {
            let (published, _) = processors::exclusively(&store, "crl", processors.crl.step())
                .await?
                .ok_or_else(|| busy("crl"))?;
            print(serde_json::to_value(published)?);
        }
        Outputs::Crl(CrlCommand::Reproduce {
            authority,
            number,
            output,
        }) => {
            let ca = office
                .ca(&authority)
                .with_context(|| format!("there is no authority {authority:?}"))?;
            let (der, recorded) = crl_publisher::reproduce(&store, ca, &authority, number).await?;
            let made = processors::sha256_hex(&der);
            if let Some(output) = output {
                std::fs::write(&output, &der)
                    .with_context(|| format!("writing {}", output.display()))?;
            }
            if made == recorded {
                println!(
                    "{authority} CRL number {number}: made again from the log, identical to the one published (sha256 {made})"
                );
            } else {
                println!(
                    "{authority} CRL number {number}: DIFFERS from the one published: recorded sha256 {recorded}, made again {made}"
                );
                return Ok(ExitCode::from(1));
            }
        }
        Outputs::Print(PrintCommand::Create { authority, actor }) => {
            let actor = hpki_events::Actor::parse(&actor).map_err(|why| anyhow::anyhow!(why))?;
            let made = processors::exclusively(&store, "print", async {
                processors
                    .print
                    .create(&authority, &actor)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .await?
            .ok_or_else(|| busy("print"))?;
            match made {
                Some(summary) => print(serde_json::to_value(summary)?),
                None => println!("no QR of {authority} is waiting to be printed"),
            }
        }
        Outputs::Print(PrintCommand::Scheduled) => {
            let (made, _) = processors::exclusively(&store, "print", async {
                processors
                    .print
                    .step()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .await?
            .ok_or_else(|| busy("print"))?;
            print(serde_json::to_value(made)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
