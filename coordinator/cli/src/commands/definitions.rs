//! `lambdex definitions`: the deployment objects the settings describe.

use lambdex::queue::topology::Topology;
use lambdex::sink;

use super::ConfigArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The exchanges, queues and bindings, as RabbitMQ definitions JSON.
    Rabbitmq(ConfigArgs),
    /// The index template for `elasticsearch.index`, as JSON.
    Elasticsearch(ConfigArgs),
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Rabbitmq(args) => {
            let config = args.load()?;
            println!("{:#}", Topology::new(&config.queue).definitions());
        }
        Command::Elasticsearch(args) => {
            let config = args.load()?;
            println!("{:#}", sink::index_template(&config.elasticsearch));
        }
    }
    Ok(())
}
