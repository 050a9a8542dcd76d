use clap::Parser;
use tokio_util::sync::CancellationToken;

use jobq::app::App;
use jobq::auth::{self, KeySpec};
use jobq::cli::{Cli, Command, KeysCommand};
use jobq::store;
use jobq::{api, db, shutdown, telemetry};

/// mimalloc instead of glibc malloc: the request and worker paths allocate many small JSON values;
/// glibc spent a third of a batch enqueue in malloc/free (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            println!("{}", api::spec_json());
            Ok(())
        }
        Command::Migrate(db_config) => {
            telemetry::init(cli.log_format);
            let pool = db::connect(&db_config).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Keys {
            db: db_config,
            action,
        } => {
            telemetry::init(cli.log_format);
            let pool = db::connect(&db_config).await?;
            db::migrate(&pool).await?;
            keys(&pool, action).await
        }
        Command::Serve(config) => {
            telemetry::init(cli.log_format);
            let pool = db::connect(&config.db).await?;
            db::migrate(&pool).await?;
            let token = CancellationToken::new();
            shutdown::on_signal(token.clone());
            let app = App::start(*config, pool, token).await?;
            app.wait().await?;
            tracing::info!("stopped");
            Ok(())
        }
    }
}

async fn keys(pool: &sqlx::PgPool, action: KeysCommand) -> anyhow::Result<()> {
    match action {
        KeysCommand::Create {
            name,
            role,
            tenant,
            rate_limit,
        } => {
            let spec = KeySpec::parse(&name, role, &tenant, rate_limit).map_err(|e| {
                anyhow::anyhow!("invalid --{}: {}", e.field.replace('_', "-"), e.message)
            })?;
            let created = auth::create_key(pool, &spec).await?;
            eprintln!(
                "created key {} (name {}, role {}, tenant {}); the token below is shown only once:",
                created.row.id, created.row.name, created.row.role, created.row.tenant
            );
            println!("{}", created.token);
        }
        KeysCommand::List => {
            println!(
                "{:<36}  {:<20}  {:<6}  {:<16}  {:<10}  {:<25}  revoked",
                "id", "name", "role", "tenant", "prefix", "created"
            );
            for k in store::keys::list(pool).await? {
                println!(
                    "{:<36}  {:<20}  {:<6}  {:<16}  {:<10}  {:<25}  {}",
                    k.id,
                    k.name,
                    k.role,
                    k.tenant,
                    k.prefix,
                    k.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    k.revoked_at.map_or_else(
                        || "-".to_owned(),
                        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                );
            }
        }
        KeysCommand::Revoke { id } => match store::keys::revoke(pool, id).await? {
            Some(k) => eprintln!("revoked key {} ({})", k.id, k.name),
            None => anyhow::bail!("no key {id}"),
        },
    }
    Ok(())
}
