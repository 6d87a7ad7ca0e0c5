//! The admin trigger's one RabbitMQ connection, opened on first use and
//! again after it is lost; opening it (connection, channel, topology)
//! takes at most `queue.connect_timeout`, so callers queued behind the
//! lock wait a bounded time too.

use lapin::{Channel, Connection};
use tokio::sync::Mutex;

use crate::config::QueueConfig;
use crate::queue::amqp::{self, AmqpError};
use crate::queue::topology::Topology;

#[derive(Debug)]
pub struct Broker {
    config: QueueConfig,
    topology: Topology,
    open: Mutex<Option<(Connection, Channel)>>,
}

impl Broker {
    pub fn new(config: QueueConfig) -> Self {
        Self {
            topology: Topology::new(&config),
            config,
            open: Mutex::new(None),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// A confirmed channel on a live connection, the topology declared.
    pub async fn channel(&self) -> Result<Channel, AmqpError> {
        let mut open = self.open.lock().await;
        if let Some((connection, channel)) = open.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let opening = async {
            let connection = amqp::connect(&self.config, "lambdex admin").await?;
            let channel = amqp::confirmed_channel(&connection).await?;
            self.topology.declare(&channel).await?;
            Ok::<_, AmqpError>((connection, channel))
        };
        let (connection, channel) = tokio::time::timeout(self.config.connect_timeout, opening)
            .await
            .map_err(|_| AmqpError::connect_timeout(&self.config))??;
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }
}
