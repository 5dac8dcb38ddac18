//! An SDK interceptor that records what a client really sends and receives:
//! each request's operation and wire JSON, and its response's. The cost
//! benchmark feeds these to [`crate::capacity::Ledger`]. It works for any
//! client of the AWS JSON protocols (DynamoDB, and SQS since it moved to
//! JSON); each retry attempt is recorded, as each is billed.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request and its response, as sent on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Captured {
    /// The operation (`PutItem`, `SendMessage`…).
    pub op: String,
    pub request: Value,
    pub response: Value,
    #[serde(default)]
    pub request_bytes: usize,
    #[serde(default)]
    pub response_bytes: usize,
}

/// Shared by a client's configuration and the benchmark that reads it.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    log: Arc<Mutex<Vec<Captured>>>,
}

impl Capture {
    /// Takes everything recorded since the last call.
    pub fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut self.log.lock().expect("capture log"))
    }

    /// How many requests are recorded since the last `take`.
    pub fn len(&self) -> usize {
        self.log.lock().expect("capture log").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The request of the attempt in flight, kept in the operation's own
/// config bag so that concurrent operations never mix.
#[derive(Debug, Clone)]
struct InFlight {
    op: String,
    body: Vec<u8>,
}

impl Storable for InFlight {
    type Storer = StoreReplace<Self>;
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

impl Intercept for Capture {
    fn name(&self) -> &'static str {
        "convo-bench-capture"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        // `X-Amz-Target: DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessage`.
        let op = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("unknown")
            .to_string();
        let body = request.body().bytes().unwrap_or_default().to_vec();
        cfg.interceptor_state().store_put(InFlight { op, body });
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(sent) = cfg.load::<InFlight>() else {
            return Ok(());
        };
        let received = context.response().body().bytes().unwrap_or_default();
        let captured = Captured {
            op: sent.op.clone(),
            request: json(&sent.body),
            response: json(received),
            request_bytes: sent.body.len(),
            response_bytes: received.len(),
        };
        self.log.lock().expect("capture log").push(captured);
        Ok(())
    }
}
