//! The `hpki` command.

mod outputs_cli;

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

/// mimalloc rather than glibc's allocator: reading the log hands every event from the reading
/// thread to the folding one, and glibc frees memory from another thread slowly (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use hpki_backoffice::audit::{self, AuditPublicKey, VerifyError};
use hpki_backoffice::clock::{SharedClock, SystemClock, show_jst};
use hpki_backoffice::config::{Config, LogFormat, Role};
use hpki_backoffice::office::ImportMode;
use hpki_backoffice::problem::{OfficeError, Problem};
use hpki_backoffice::serve::{self, open_store};
use hpki_backoffice::{export, projection_runner};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The HPKI second-certificate back office.
#[derive(Parser)]
#[command(name = "hpki", version, about)]
struct Cli {
    /// Configuration file (TOML); see ops/hpki.example.toml. Default: none, or $HPKI_CONFIG.
    #[arg(long, global = true, env = "HPKI_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Overrides the configuration and
    /// $HPKI_DATABASE_URL.
    #[arg(long, global = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the back office: HTTP server and JSON API, projections, the key pool and
    /// scheduled checkpoints.
    Serve {
        /// When the database is empty, seed the demo data set (as `hpki demo`) first.
        #[arg(long)]
        demo: bool,
    },
    /// Import data files.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Seed a realistic data set through the office's own commands: both authorities, a few
    /// hundred applications in every state, a JMA card shortage with pre-issued QRs.
    Demo {
        /// About how many applications.
        #[arg(long, default_value_t = 300)]
        applications: usize,
    },
    /// Staff API access.
    #[command(subcommand)]
    Staff(StaffCommand),
    /// After issuance: the expiry job and a subscriber's timeline.
    #[command(subcommand)]
    Qr(QrCommand),
    /// Reissue of a QR (e-mail or web-form requests; on-screen reissue is the portal's).
    #[command(subcommand)]
    Reissue(ReissueCommand),
    /// Lost IC cards and phones.
    #[command(subcommand)]
    Loss(LossCommand),
    /// Revocation under dual control: one proposes, another approver decides.
    #[command(subcommand)]
    Revocation(RevocationCommand),
    /// The mail outbox, run once.
    #[command(subcommand)]
    Mail(outputs_cli::MailCommand),
    /// CRL publication, run once; reproduction of a published CRL from the log.
    #[command(subcommand)]
    Crl(outputs_cli::CrlCommand),
    /// Print batches of QR cards for the mail house.
    #[command(subcommand)]
    Print(outputs_cli::PrintCommand),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Check and sign the log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Move the log in and out as JSON Lines.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Inspect and rebuild read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Rebuild the state as it stood at an instant into a new SQLite file; live read models
    /// are not touched.
    Replay {
        /// The instant, RFC 3339 (2026-11-22T09:00:00+09:00).
        #[arg(long, value_parser = parse_time)]
        as_of: OffsetDateTime,
        /// Where to write (a new file). Default: <data_dir>/replay/as-of-<instant>.db
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// A CSV batch of applications from a prefectural association (UTF-8 with or without
    /// BOM, or Shift_JIS/CP932). Every bad row is listed with line and column; a file with
    /// bad rows imports nothing unless --good-rows. Importing the same file again adds nothing.
    /// Exit 0 when imported, 2 when rows were refused, 1 on any other error.
    Applications {
        file: PathBuf,
        /// Import the good rows even when some are bad.
        #[arg(long)]
        good_rows: bool,
        /// Who is importing, recorded on every event: staff:NAME.
        #[arg(long, default_value = "staff:cli")]
        actor: String,
    },
}

#[derive(Subcommand)]
enum StaffCommand {
    /// Make a new API token for NAME: prints the token (give it to them) and the lines to
    /// add to the configuration (which keeps only its SHA-256); on start the account is
    /// created or brought in line with them.
    Token { name: String },
    /// Open a console account and print its one-time setup link (password, then passkey).
    Create {
        name: String,
        /// The name shown in the console.
        #[arg(long)]
        display_name: String,
        /// officer, approver, mail_house, auditor, administrator (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// For the mail_house role: which mail house of the configuration.
        #[arg(long)]
        mail_house: Option<String>,
    },
    /// A new one-time setup link for an account (a lost passkey, a forgotten password).
    SetupLink { name: String },
    /// List the accounts with their roles and state.
    List,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain and check every signed checkpoint. Exit 0 when intact, 2 when
    /// the log was altered (the first bad position is named), 1 on any other error.
    Verify {
        /// The audit public key (PEM). Default: derived from audit.key_file.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Sign the current head of the log now.
    Checkpoint,
    /// Print the audit public key (PEM), to keep away from the database.
    PublicKey,
}

/// Reads a value the way the JSON API spells it (`web_form`, `keyCompromise`, ...).
fn spelled<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?} is not one of the accepted values (see docs/lifecycle.md)"))
}

#[derive(Subcommand)]
enum QrCommand {
    /// Run the expiry job now: QRs past their last usable day, reminders, expired proposals.
    Expire,
    /// Every event of one subscriber (subscriber-<authority>-<registry number>), in JST.
    Timeline { subscriber: String },
}

#[derive(Subcommand)]
enum ReissueCommand {
    /// Record a request for a new QR for a second certificate.
    Request {
        certificate_serial: String,
        /// email or web_form
        #[arg(long, value_parser = spelled::<hpki_events::vocabulary::ReissueChannel>)]
        channel: hpki_events::vocabulary::ReissueChannel,
        /// lost, locked, expired, spoiled or device_change
        #[arg(long, value_parser = spelled::<hpki_events::vocabulary::ReissueReason>)]
        reason: hpki_events::vocabulary::ReissueReason,
        #[arg(long)]
        actor: String,
    },
    /// The request's documents were checked (needed before approving an e-mail request).
    CheckDocuments {
        id: uuid::Uuid,
        #[arg(long)]
        actor: String,
    },
    /// Approve: a new QR by the request's channel; earlier QRs are superseded.
    Approve {
        id: uuid::Uuid,
        #[arg(long)]
        actor: String,
    },
    Reject {
        id: uuid::Uuid,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        actor: String,
    },
}

#[derive(Subcommand)]
enum LossCommand {
    /// Record a lost IC card (card) or phone (device): a case to decide.
    Report {
        certificate_serial: String,
        #[arg(long, value_parser = spelled::<hpki_events::vocabulary::LossKind>)]
        kind: hpki_events::vocabulary::LossKind,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        actor: String,
    },
    /// Close a case without revoking anything.
    Close {
        id: uuid::Uuid,
        #[arg(long)]
        note: String,
        #[arg(long)]
        actor: String,
    },
}

#[derive(Subcommand)]
enum RevocationCommand {
    /// Propose: card_only, card_and_second, second_only or device_only, with an RFC 5280
    /// reason (keyCompromise, ...; none for device_only).
    Propose {
        certificate_serial: String,
        #[arg(long, value_parser = spelled::<hpki_events::vocabulary::RevocationScope>)]
        scope: hpki_events::vocabulary::RevocationScope,
        #[arg(long, value_parser = spelled::<hpki_events::vocabulary::ReasonCode>)]
        reason: Option<hpki_events::vocabulary::ReasonCode>,
        /// The loss case this decides.
        #[arg(long)]
        case: Option<uuid::Uuid>,
        #[arg(long)]
        actor: String,
    },
    /// Approve as a second person holding the approver role.
    Approve {
        id: uuid::Uuid,
        #[arg(long)]
        actor: String,
    },
    /// Reject as a second person holding the approver role.
    Reject {
        id: uuid::Uuid,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        actor: String,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Write the whole log as JSON Lines with positions and hashes (docs/event-log.md).
    Export {
        /// Output file. Default: standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Load an exported log into an empty store, checking every line; all or nothing.
    Import { file: PathBuf },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Show how far each projection has read.
    Status,
    /// Rebuild one projection (or all) from position 0.
    Rebuild { name: Option<String> },
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time such as 2026-11-22T09:00:00+09:00"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(mut config) => {
            if let Some(url) = &cli.database {
                config.database_url = url.clone();
            }
            config
        }
        Err(error) => {
            eprintln!("error: configuration: {error}");
            return ExitCode::from(1);
        }
    };
    init_logging(&config);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// A staff actor named on the command line: an account of the log (the configuration's
/// `[staff.*]` provisioned first, as every `hpki serve` start does), not disabled, holding
/// `role` — the same rule as the API and the console.
async fn staff_actor(
    directory: &hpki_backoffice::staff::Directory,
    actor: &str,
    role: Role,
) -> Result<hpki_events::Actor, OfficeError> {
    let refused = |code: &str, ja: String, en: String| -> OfficeError {
        Problem::new(403, code, ja, en).field("actor").into()
    };
    let Some(name) = actor.strip_prefix("staff:") else {
        return Err(refused(
            "not_staff",
            format!("--actor「{actor}」は職員（staff:名前）ではありません"),
            format!("--actor {actor:?} is not a staff member (staff:NAME)"),
        ));
    };
    let account = directory.account(name).await?.ok_or_else(|| {
        refused(
            "unknown_staff",
            format!("職員アカウント「{name}」はありません（hpki staff list）"),
            format!("there is no staff account {name:?} (see hpki staff list)"),
        )
    })?;
    if account.disabled {
        return Err(refused(
            "disabled",
            format!("職員アカウント「{name}」は停止されています"),
            format!("the staff account {name} is disabled"),
        ));
    }
    if !account.holds(role) {
        return Err(refused(
            "role_required",
            format!("{actor} は役割「{}」を持っていません", role.as_str()),
            format!("{actor} does not hold the {} role", role.as_str()),
        ));
    }
    Ok(account.actor())
}

/// The commands after issuance: each prints its result as JSON; a refusal prints its message
/// in both languages and exits 2.
async fn lifecycle_command(
    command: Command,
    config: &Config,
    clock: SharedClock,
) -> anyhow::Result<ExitCode> {
    let store = open_store(config, clock.clone()).await?;
    let directory = hpki_backoffice::staff::Directory::new(store.clone(), clock.clone(), config)?;
    directory.provision(config).await?;
    let office = serve::office(config, store, clock).await?;
    let result: Result<serde_json::Value, OfficeError> = async {
        Ok(match command {
            Command::Qr(QrCommand::Expire) => json(&office.run_expiry().await?),
            Command::Qr(QrCommand::Timeline { subscriber }) => {
                json(&office.timeline(&subscriber).await?)
            }
            Command::Reissue(ReissueCommand::Request {
                certificate_serial,
                channel,
                reason,
                actor,
            }) => {
                let actor = staff_actor(&directory, &actor, Role::Officer).await?;
                let id = office
                    .request_reissue(&certificate_serial, channel, reason, &actor)
                    .await?;
                serde_json::json!({ "id": id })
            }
            Command::Reissue(ReissueCommand::CheckDocuments { id, actor }) => {
                office
                    .check_reissue_documents(
                        id,
                        &staff_actor(&directory, &actor, Role::Officer).await?,
                    )
                    .await?;
                serde_json::json!({ "id": id, "documents_checked": true })
            }
            Command::Reissue(ReissueCommand::Approve { id, actor }) => json(
                &office
                    .approve_reissue(id, &staff_actor(&directory, &actor, Role::Officer).await?)
                    .await?,
            ),
            Command::Reissue(ReissueCommand::Reject { id, reason, actor }) => {
                office
                    .reject_reissue(
                        id,
                        &reason,
                        &staff_actor(&directory, &actor, Role::Officer).await?,
                    )
                    .await?;
                serde_json::json!({ "id": id, "rejected": true })
            }
            Command::Loss(LossCommand::Report {
                certificate_serial,
                kind,
                note,
                actor,
            }) => {
                let actor = staff_actor(&directory, &actor, Role::Officer).await?;
                let id = office
                    .report_loss(&certificate_serial, kind, &note, &actor)
                    .await?;
                serde_json::json!({ "id": id })
            }
            Command::Loss(LossCommand::Close { id, note, actor }) => {
                office
                    .close_case(
                        id,
                        &note,
                        &staff_actor(&directory, &actor, Role::Officer).await?,
                    )
                    .await?;
                serde_json::json!({ "id": id, "closed": true })
            }
            Command::Revocation(RevocationCommand::Propose {
                certificate_serial,
                scope,
                reason,
                case,
                actor,
            }) => {
                let form = hpki_backoffice::office::ProposalForm {
                    certificate_serial,
                    scope,
                    reason,
                    case_id: case,
                };
                let proposed = office
                    .propose_revocation(
                        &form,
                        &staff_actor(&directory, &actor, Role::Officer).await?,
                    )
                    .await?;
                json(&proposed)
            }
            Command::Revocation(RevocationCommand::Approve { id, actor }) => json(
                &office
                    .approve_revocation(id, &staff_actor(&directory, &actor, Role::Approver).await?)
                    .await?,
            ),
            Command::Revocation(RevocationCommand::Reject { id, reason, actor }) => {
                office
                    .reject_revocation(
                        id,
                        &reason,
                        &staff_actor(&directory, &actor, Role::Approver).await?,
                    )
                    .await?;
                serde_json::json!({ "id": id, "rejected": true })
            }
            _ => unreachable!("only the lifecycle commands come here"),
        })
    }
    .await;
    match result {
        Ok(value) => {
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(OfficeError::Problem(problem)) => {
            let field = problem
                .field
                .as_deref()
                .map_or(String::new(), |f| format!(" [{f}]"));
            eprintln!(
                "{}{field}: {} / {}",
                problem.code, problem.message.ja, problem.message.en
            );
            Ok(ExitCode::from(2))
        }
        Err(OfficeError::Internal(error)) => Err(error),
    }
}

/// A command's result as JSON, for printing.
fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
    let mut builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Colours only for a person at a terminal: a log sent to a file or a collector gets plain
    // text, without escape codes between a field's name and its value. Only turned off here,
    // never on: `with_ansi(true)` would override the subscriber's own NO_COLOR check.
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        builder = builder.with_ansi(false);
    }
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    let clock: SharedClock = Arc::new(SystemClock);
    match command {
        Command::Serve { demo } => {
            if demo && seed_demo(&config, clock.clone(), 300).await?.is_some() {
                eprintln!("hpki: the database was empty; seeded the demo data set");
            }
            let mut running = serve::start(&config, clock).await?;
            let listen = &config.server.listen;
            let host = listen
                .rsplit_once(':')
                .map_or(listen.as_str(), |(host, _)| host);
            println!(
                "hpki: serving on http://{host}:{} (Ctrl-C stops)",
                running.port
            );
            (&mut running.done).await??;
        }
        Command::Import(ImportCommand::Applications {
            file,
            good_rows,
            actor,
        }) => {
            let actor = hpki_events::Actor::parse(&actor).map_err(|why| anyhow::anyhow!(why))?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let store = open_store(&config, clock.clone()).await?;
            let office = serve::office(&config, store, clock).await?;
            let mode = if good_rows {
                ImportMode::GoodRows
            } else {
                ImportMode::AllOrNothing
            };
            let bar = rows_bar("取り込み中 / importing");
            let outcome = office
                .import(&bytes, mode, &actor, &|done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .await;
            bar.finish_and_clear();
            let name = file.display();
            match outcome {
                Ok(report) => {
                    for e in &report.errors {
                        eprintln!("{name}:{}: [{}] {} / {}", e.line, e.column, e.ja, e.en);
                    }
                    println!(
                        "{name}: {} 件を取り込みました（既に取り込み済み {} 件、誤り {} 件） / imported {}, already imported {}, refused {} ({}, sha256 {})",
                        report.imported,
                        report.already_imported,
                        report.errors.len(),
                        report.imported,
                        report.already_imported,
                        report.errors.len(),
                        report.encoding,
                        report.file_sha256
                    );
                    if !report.errors.is_empty() {
                        return Ok(ExitCode::from(2));
                    }
                }
                Err(OfficeError::Problem(problem)) => {
                    for d in &problem.details {
                        let line = d.line.map_or(String::new(), |l| format!("{l}:"));
                        let column = d.column.as_deref().unwrap_or("");
                        eprintln!(
                            "{name}:{line} [{column}] {} / {}",
                            d.message.ja, d.message.en
                        );
                    }
                    eprintln!("{name}: {} / {}", problem.message.ja, problem.message.en);
                    return Ok(ExitCode::from(2));
                }
                Err(OfficeError::Internal(error)) => return Err(error),
            }
        }
        Command::Qr(_) | Command::Reissue(_) | Command::Loss(_) | Command::Revocation(_) => {
            return lifecycle_command(command, &config, clock).await;
        }
        Command::Mail(c) => {
            return outputs_cli::run(outputs_cli::Outputs::Mail(c), &config, clock).await;
        }
        Command::Crl(c) => {
            return outputs_cli::run(outputs_cli::Outputs::Crl(c), &config, clock).await;
        }
        Command::Print(c) => {
            return outputs_cli::run(outputs_cli::Outputs::Print(c), &config, clock).await;
        }
        Command::Demo { applications } => {
            let seeded = seed_demo(&config, clock, applications)
                .await?
                .context("the database already holds events; the demo seeds an empty database")?;
            println!(
                "demo: {} applications ({} approved, of which {} with the card deferred and the QR pre-issued; {} rejected); after issuance {} QRs locked, {} phones registered, {} reissue requests, {} loss cases, {} revocation proposals waiting",
                seeded.applications,
                seeded.approved,
                seeded.deferred,
                seeded.rejected,
                seeded.locked,
                seeded.registered,
                seeded.reissues,
                seeded.losses,
                seeded.proposals
            );
        }
        Command::Staff(StaffCommand::Token { name }) => {
            hpki_events::Actor::parse(&format!("staff:{name}"))
                .map_err(|why| anyhow::anyhow!(why))?;
            let token = hex::encode(hpki_backoffice::secrets::Secret::random().bytes());
            let hash = hex::encode(openssl::sha::sha256(token.as_bytes()));
            println!("token for {name} (shown once; give it to them): {token}");
            println!("add to the configuration:\n[staff.{name}]\ntoken_sha256 = \"{hash}\"");
        }
        Command::Staff(command) => {
            let store = open_store(&config, clock.clone()).await?;
            let directory = hpki_backoffice::staff::Directory::new(store, clock, &config)?;
            let actor = hpki_events::Actor::system("cli");
            let shown = match command {
                StaffCommand::Token { .. } => unreachable!("handled above"),
                StaffCommand::Create {
                    name,
                    display_name,
                    roles,
                    mail_house,
                } => {
                    let roles = roles
                        .iter()
                        .map(|r| {
                            hpki_backoffice::config::Role::parse(r)
                                .ok_or_else(|| anyhow::anyhow!("--role {r:?}: one of officer, approver, mail_house, auditor, administrator"))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    directory
                        .create(&name, &display_name, &roles, mail_house.as_deref(), &actor)
                        .await
                        .map(|link| Some(link.url))
                }
                StaffCommand::SetupLink { name } => directory
                    .reissue_setup_link(&name, &actor)
                    .await
                    .map(|link| Some(link.url)),
                StaffCommand::List => {
                    for a in directory
                        .accounts()
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                    {
                        let roles: Vec<&str> = a.roles.iter().map(|r| r.as_str()).collect();
                        println!(
                            "{}\t{}\t{}\t{}",
                            a.name,
                            a.display_name,
                            roles.join(","),
                            if a.disabled {
                                "disabled"
                            } else if a.set_up() {
                                "active"
                            } else {
                                "not set up"
                            }
                        );
                    }
                    Ok(None)
                }
            };
            match shown {
                Ok(Some(url)) => println!("one-time setup link (give it to its holder): {url}"),
                Ok(None) => {}
                Err(hpki_backoffice::problem::OfficeError::Problem(p)) => {
                    eprintln!("{} / {}", p.message.ja, p.message.en);
                    std::process::exit(2);
                }
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            }
        }
        Command::Migrate => {
            let store = open_store(&config, clock).await?;
            println!("migrations applied ({})", store.db().backend());
        }
        Command::Audit(AuditCommand::Verify { public_key }) => {
            let key = match public_key {
                Some(path) => AuditPublicKey::from_pem(
                    &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("{} is not a PEM public key", path.display()))?,
                None => serve::audit_key(&config)?.public(),
            };
            let store = open_store(&config, clock).await?;
            let bar = counter("verifying", store.head().await?.position);
            let result = audit::verify(&store, &key, &|n| bar.set_position(n as u64)).await;
            bar.finish_and_clear();
            match result {
                Ok(summary) => println!("{summary}"),
                Err(VerifyError::Tampered(tamper)) => {
                    println!("TAMPERED: {tamper}");
                    return Ok(ExitCode::from(2));
                }
                Err(VerifyError::Store(error)) => return Err(error.into()),
            }
        }
        Command::Audit(AuditCommand::Checkpoint) => {
            let store = open_store(&config, clock.clone()).await?;
            let key = serve::audit_key(&config)?;
            let cp = audit::checkpoint(&store, &key, clock.as_ref()).await?;
            println!(
                "checkpoint #{} signed: position {}, hash {}, key {}",
                cp.id,
                cp.position,
                hex::encode(&cp.hash),
                cp.key_id
            );
        }
        Command::Audit(AuditCommand::PublicKey) => {
            print!("{}", serve::audit_key(&config)?.public().to_pem());
        }
        Command::Events(EventsCommand::Export { output }) => {
            let store = open_store(&config, clock).await?;
            let bar = counter("exporting", store.head().await?.position);
            let progress = |n: i64| bar.set_position(n as u64);
            let count = match &output {
                Some(path) => {
                    let tmp = path.with_extension("partial");
                    let mut file = std::io::BufWriter::new(
                        std::fs::File::create(&tmp)
                            .with_context(|| format!("creating {}", tmp.display()))?,
                    );
                    let count = export::export(&store, &mut file, &progress).await?;
                    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                    std::fs::rename(&tmp, path)?;
                    count
                }
                None => {
                    export::export(
                        &store,
                        &mut std::io::BufWriter::new(std::io::stdout().lock()),
                        &progress,
                    )
                    .await?
                }
            };
            bar.finish_and_clear();
            eprintln!("exported {count} events");
        }
        Command::Events(EventsCommand::Import { file }) => {
            let store = open_store(&config, clock).await?;
            let input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let bar = counter("importing", 0);
            let count = export::import(
                &store,
                &file.display().to_string(),
                BufReader::new(input),
                &|n| bar.set_position(n as u64),
            )
            .await;
            bar.finish_and_clear();
            println!("imported {} events; nothing else was written", count?);
        }
        Command::Projections(ProjectionsCommand::Status) => {
            let store = open_store(&config, clock).await?;
            for s in projection_runner::status(&store).await? {
                println!(
                    "{:<20} at {:>10} of {:>10} ({} behind)",
                    s.name,
                    s.position,
                    s.head,
                    s.head - s.position
                );
            }
        }
        Command::Projections(ProjectionsCommand::Rebuild { name }) => {
            let store = open_store(&config, clock).await?;
            let bar = counter("rebuilding", store.head().await?.position);
            let done = projection_runner::rebuild(&store, name.as_deref(), &|n| {
                bar.set_position(n as u64)
            })
            .await?;
            bar.finish_and_clear();
            for (name, position) in done {
                println!("rebuilt {name} up to position {position}");
            }
        }
        Command::Replay { as_of, output } => {
            let store = open_store(&config, clock).await?;
            let output = output.unwrap_or_else(|| {
                let stamp = hpki_events::envelope::format_time(as_of).replace([':', '.'], "");
                config
                    .data_dir
                    .join("replay")
                    .join(format!("as-of-{stamp}.db"))
            });
            if let Some(dir) = output.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let bar = counter("replaying", store.head().await?.position);
            let replay = projection_runner::replay_as_of(&store, as_of, &output, &|n| {
                bar.set_position(n as u64)
            })
            .await?;
            bar.finish_and_clear();
            println!(
                "state as of {} ({}): position {}, hash {}, {} documents, written to {}",
                show_jst(as_of),
                hpki_events::envelope::format_time(as_of),
                replay.position,
                replay.hash,
                replay.documents,
                replay.path.display()
            );
        }
    }
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Seeds the demo data set into an empty database, showing progress; `None` when the
/// database already holds events.
async fn seed_demo(
    config: &Config,
    clock: SharedClock,
    applications: usize,
) -> anyhow::Result<Option<hpki_backoffice::demo::Seeded>> {
    let store = open_store(config, clock.clone()).await?;
    if store.count_events().await? > 0 {
        return Ok(None);
    }
    let office = serve::office(config, store, clock).await?;
    let bar = rows_bar("");
    let seeded = hpki_backoffice::demo::seed(&office, applications, &|what, done, total| {
        bar.set_message(what.to_owned());
        bar.set_length(total);
        bar.set_position(done);
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    Ok(Some(seeded))
}

/// A progress bar for work counted in rows or items.
fn rows_bar(what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({per_sec}, {eta})")
            .expect("a valid template"),
    );
    bar.set_message(what);
    bar
}

/// A progress bar on standard error for long work (hidden when it is not a terminal).
fn counter(what: &'static str, total: i64) -> ProgressBar {
    let bar = ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} events ({per_sec}, {eta})")
            .expect("a valid template"),
    );
    bar.set_message(what);
    bar
}
