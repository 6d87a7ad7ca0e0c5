//! Connecting to RabbitMQ on tokio, and publishing with confirms.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::config::QueueConfig;

/// AMQP persistent delivery mode.
const PERSISTENT: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("RabbitMQ: {0}")]
    Lapin(#[from] lapin::Error),
    #[error("RabbitMQ did not confirm the publish to {0:?} (nack)")]
    Nacked(String),
    #[error("RabbitMQ could not route the publish to {0:?}: is the topology declared?")]
    Unroutable(String),
    #[error("RabbitMQ did not confirm the publish to {0:?} within queue.confirm_timeout ({1:?})")]
    ConfirmTimeout(String, Duration),
    #[error("RabbitMQ at {url}: no connection within queue.connect_timeout ({timeout:?})")]
    ConnectTimeout {
        /// Redacted.
        url: String,
        timeout: Duration,
    },
}

impl AmqpError {
    /// No connection to `config.url` within `config.connect_timeout`.
    pub fn connect_timeout(config: &QueueConfig) -> Self {
        Self::ConnectTimeout {
            url: config.url.redacted(),
            timeout: config.connect_timeout,
        }
    }
}

/// A connection to `config.url` driven by tokio, named for the broker's
/// connection list, opened within `config.connect_timeout`.
pub async fn connect(config: &QueueConfig, name: &str) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current())
        .with_connection_name(LongString::from(name));
    let connecting = Connection::connect(config.url.expose(), properties);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(connected) => Ok(connected?),
        Err(_) => Err(AmqpError::connect_timeout(config)),
    }
}

/// A channel whose every publish is confirmed by the broker.
pub async fn confirmed_channel(connection: &Connection) -> Result<Channel, AmqpError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes a persistent JSON message and waits for the broker's
/// confirmation; a message no queue takes is an error (mandatory).
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    headers: FieldTable,
) -> Result<(), AmqpError> {
    let destination = || format!("{exchange}/{routing_key}");
    let confirmation = channel
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            payload,
            BasicProperties::default()
                .with_delivery_mode(PERSISTENT)
                .with_content_type(ShortString::from("application/json"))
                .with_headers(headers),
        )
        .await?
        .await?;
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(AmqpError::Unroutable(destination())),
        Confirmation::Nack(_) => Err(AmqpError::Nacked(destination())),
    }
}

/// A header's value as text, if it is there.
pub fn header_text(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// A header's value as a number, if it is there.
pub fn header_number(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    match headers?.inner().get(key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// A header's list of texts (empty if it is not there).
pub fn header_texts(headers: Option<&FieldTable>, key: &str) -> Vec<String> {
    let Some(AMQPValue::FieldArray(values)) = headers.and_then(|h| h.inner().get(key)) else {
        return Vec::new();
    };
    values
        .as_slice()
        .iter()
        .filter_map(|value| match value {
            AMQPValue::LongString(text) => Some(text.to_string()),
            AMQPValue::ShortString(text) => Some(text.to_string()),
            _ => None,
        })
        .collect()
}

/// Sets a header to a list of texts.
pub fn set_texts(headers: &mut FieldTable, key: &str, values: &[String]) {
    let values: Vec<AMQPValue> = values
        .iter()
        .map(|value| AMQPValue::LongString(LongString::from(value.as_str())))
        .collect();
    headers.insert(ShortString::from(key), AMQPValue::FieldArray(values.into()));
}

/// Sets a text header.
pub fn set_text(headers: &mut FieldTable, key: &str, value: &str) {
    headers.insert(
        ShortString::from(key),
        AMQPValue::LongString(LongString::from(value)),
    );
}

/// Sets a number header.
pub fn set_number(headers: &mut FieldTable, key: &str, value: i64) {
    headers.insert(ShortString::from(key), AMQPValue::LongLongInt(value));
}
