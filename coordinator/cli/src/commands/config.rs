//! `lambdex config`: the coordinator's settings.

use super::ConfigArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate the settings and print the effective values (defaults, the
    /// file, then `LAMBDEX__…` variables) as TOML.
    Check(ConfigArgs),
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check(args) => {
            let config = args.load()?;
            print!("{}", config.to_redacted_toml());
            eprintln!("lambdex: the configuration is valid");
        }
    }
    Ok(())
}
