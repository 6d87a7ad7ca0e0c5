//! `lambdex admin`: the HTTP trigger, and its tokens.

use std::io::BufRead as _;

use anyhow::Context as _;
use lambdex::config::{Config, Scope};

use super::{ConfigArgs, shutdown_signal};
use crate::UsageError;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the admin API on `admin.listen` until SIGTERM or Ctrl-C.
    Serve(ConfigArgs),
    /// Print a new random token and its `[[admin.tokens]]` entry.
    NewToken {
        /// The token's name in logs, audit lines and its rate limit.
        #[arg(long, default_value = "support")]
        name: String,
        /// What it may do (comma-separated): predict, store, submit, read,
        /// replay. The default lets it label photos and read results only.
        #[arg(long, value_delimiter = ',', default_value = "predict,read")]
        scopes: Vec<Scope>,
    },
    /// Print the SHA-256 of the token read from stdin, for `admin.tokens`.
    HashToken,
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args.load()?).await,
        Command::NewToken { name, scopes } => {
            let token = lambdex::admin::new_token()
                .map_err(|error| anyhow::anyhow!("no random bytes: {error}"))?;
            println!("token (give it to its holder; it is not stored): {token}");
            println!();
            println!("[[admin.tokens]]");
            println!("name = {name:?}");
            println!("sha256 = {:?}", lambdex::admin::hash_token(&token));
            let scopes: std::collections::BTreeSet<Scope> = scopes.into_iter().collect();
            let scopes: Vec<String> = scopes
                .iter()
                .map(|scope| format!("{:?}", scope.as_str()))
                .collect();
            println!("scopes = [{}]", scopes.join(", "));
            Ok(())
        }
        Command::HashToken => {
            let mut token = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut token)
                .context("reading the token from stdin")?;
            if token.trim().is_empty() {
                return Err(UsageError("no token on stdin".to_owned()).into());
            }
            println!("{}", lambdex::admin::hash_token(&token));
            Ok(())
        }
    }
}

/// The HTTP trigger until a signal; requests in progress finish, and
/// stored documents are flushed.
async fn serve(config: Config) -> anyhow::Result<()> {
    let lambda = lambdex::lambda::client::from_config(&config.lambda).await;
    let address = config.admin.listen;
    let (state, sink_task) = lambdex::admin::AdminState::new(config, lambda).await?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on admin.listen {address}"))?;
    eprintln!(
        "lambdex admin listening on http://{} (OpenAPI at /openapi.json)",
        listener.local_addr()?
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    lambdex::admin::serve(listener, state, shutdown).await;
    sink_task.await.context("the Elasticsearch sink")?;
    Ok(())
}
