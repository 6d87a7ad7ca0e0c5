//! RabbitMQ: the [`topology`] every worker and producer declares, the
//! [`amqp`] connection and confirmed publishes, the [`worker`] that takes a
//! job through the pipeline and settles its delivery, the failure
//! [`headers`] a requeued or dead-lettered job carries, [`enqueue`] (the
//! batch producer) and [`dlq`] (reading and replaying the dead letters).

pub mod amqp;
pub mod dlq;
pub mod enqueue;
pub mod headers;
pub mod topology;
pub mod worker;
