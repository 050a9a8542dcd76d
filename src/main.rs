use clap::Parser;
use tokio_util::sync::CancellationToken;

use jobq::app::App;
use jobq::cli::{Cli, Command};
use jobq::{api, db, shutdown, telemetry};

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
