//! AWS adapters: the conversation store on DynamoDB and the queues on SQS,
//! implementing the ports of `convo-domain`, and the definitions of the
//! table and queues they expect (one source of truth for `init-aws`, the
//! tests and the infrastructure).

pub mod config;
pub mod dynamo;
pub mod eventbridge;
pub mod keys;
pub mod lambda;
pub mod metrics;
pub mod resources;
pub mod sqs;

pub use config::{AwsSettings, ConfigError};
pub use dynamo::DynamoStore;
pub use eventbridge::EventBridgePublisher;
pub use keys::KmsKeyRing;
pub use sqs::{SqsQueue, SqsQueueConfig};
