//! The key ring on AWS (issue 16): one data key
//! per (owner, user), made by KMS `GenerateDataKey` under the stack's key
//! with the encryption context `{owner, user}`, stored only wrapped (KMS's
//! ciphertext blob) in a key table of its own — apart from the data table,
//! whose point-in-time backups keep everything for 35 days — and unwrapped
//! by KMS `Decrypt` with the same context. Unwrapped keys are cached in
//! memory (bounded, for a bounded time), so a warm function makes no KMS
//! call per append. Destroying a user's key (a DeleteItem) makes every
//! ciphertext of theirs unreadable for good, backups included.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use convo_domain::crypto::{DataKey, KeyCache};
use convo_domain::ports::{KeyError, KeyId, KeyRing};

fn unavailable(e: impl std::error::Error) -> KeyError {
    KeyError::Unavailable(aws_sdk_kms::error::DisplayErrorContext(e).to_string())
}

fn dynamo_unavailable<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_dynamodb::error::SdkError<E, R>,
) -> KeyError {
    KeyError::Unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

pub struct KmsKeyRing {
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    kms: aws_sdk_kms::Client,
    key_id: String,
    cache: KeyCache,
    /// KMS calls made (GenerateDataKey and Decrypt), for the benchmarks.
    pub kms_calls: AtomicU64,
}

fn pk(owner: &str, user: &str) -> String {
    format!("K#{owner}\u{1f}{user}")
}

fn context(owner: &str, user: &str) -> HashMap<String, String> {
    HashMap::from([
        ("owner".to_string(), owner.to_string()),
        ("user".to_string(), user.to_string()),
    ])
}

impl KmsKeyRing {
    pub fn new(dynamo: aws_sdk_dynamodb::Client, table: &str, kms: aws_sdk_kms::Client, key_id: &str) -> Self {
        Self {
            dynamo,
            table: table.to_string(),
            kms,
            key_id: key_id.to_string(),
            cache: KeyCache::default(),
            kms_calls: AtomicU64::new(0),
        }
    }

    async fn unwrap_key(&self, owner: &str, user: &str, blob: Vec<u8>) -> Result<Arc<DataKey>, KeyError> {
        self.kms_calls.fetch_add(1, Ordering::Relaxed);
        let out = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
            .set_encryption_context(Some(context(owner, user)))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_invalid_ciphertext_exception() => {
                    KeyError::Corrupt(format!("the key of ({owner}, …) does not unwrap"))
                }
                _ => unavailable(e),
            })?;
        let plain = out
            .plaintext
            .ok_or_else(|| KeyError::Corrupt("KMS answered no key".into()))?;
        let key = DataKey::from_bytes(plain.as_ref()).map_err(|e| KeyError::Corrupt(e.to_string()))?;
        Ok(Arc::new(key))
    }

    /// The stored key of (owner, user): its id and its wrapped bytes.
    async fn stored(&self, owner: &str, user: &str) -> Result<Option<(KeyId, Vec<u8>)>, KeyError> {
        let out = self
            .dynamo
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk(owner, user)))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_unavailable)?;
        let Some(mut item) = out.item else { return Ok(None) };
        let kid = match item.get("kid").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()) {
            Some(k) => k,
            None => return Err(KeyError::Corrupt("a stored key has no id".into())),
        };
        match item.remove("wrapped") {
            Some(AttributeValue::B(b)) => Ok(Some((kid, b.into_inner()))),
            _ => Err(KeyError::Corrupt("a stored key has no wrapped bytes".into())),
        }
    }

    async fn open_stored(&self, owner: &str, user: &str, kid: KeyId, blob: Vec<u8>) -> Result<Arc<DataKey>, KeyError> {
        if let Some(k) = self.cache.get(owner, user, kid) {
            return Ok(k);
        }
        let key = self.unwrap_key(owner, user, blob).await?;
        self.cache.put(owner, user, kid, key.clone());
        Ok(key)
    }
}

#[async_trait]
impl KeyRing for KmsKeyRing {
    async fn current_key(&self, owner: &str, user: &str) -> Result<(KeyId, Arc<DataKey>), KeyError> {
        if let Some((kid, blob)) = self.stored(owner, user).await? {
            return Ok((kid, self.open_stored(owner, user, kid, blob).await?));
        }
        self.kms_calls.fetch_add(1, Ordering::Relaxed);
        let made = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context(Some(context(owner, user)))
            .send()
            .await
            .map_err(unavailable)?;
        let (Some(plain), Some(blob)) = (made.plaintext, made.ciphertext_blob) else {
            return Err(KeyError::Unavailable("KMS answered no data key".into()));
        };
        let kid = convo_domain::crypto::new_key_id().map_err(|e| KeyError::Unavailable(e.to_string()))?;
        let put = self
            .dynamo
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(pk(owner, user)))
            .item("kid", AttributeValue::N(kid.to_string()))
            .item("wrapped", AttributeValue::B(blob.into_inner().into()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => {
                let key = Arc::new(DataKey::from_bytes(plain.as_ref()).map_err(|e| KeyError::Corrupt(e.to_string()))?);
                self.cache.put(owner, user, kid, key.clone());
                Ok((kid, key))
            }
            // Another instance made one first: theirs is the key.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                let (kid, blob) = self
                    .stored(owner, user)
                    .await?
                    .ok_or_else(|| KeyError::Unavailable("the key vanished".into()))?;
                Ok((kid, self.open_stored(owner, user, kid, blob).await?))
            }
            Err(e) => Err(dynamo_unavailable(e)),
        }
    }

    async fn key(&self, owner: &str, user: &str, kid: KeyId) -> Result<Option<Arc<DataKey>>, KeyError> {
        if let Some(k) = self.cache.get(owner, user, kid) {
            return Ok(Some(k));
        }
        match self.stored(owner, user).await? {
            Some((found, blob)) if found == kid => Ok(Some(self.open_stored(owner, user, kid, blob).await?)),
            _ => Ok(None),
        }
    }

    async fn confirm(&self, owner: &str, user: &str, kid: KeyId) -> Result<bool, KeyError> {
        Ok(self.stored(owner, user).await?.is_some_and(|(found, _)| found == kid))
    }

    async fn destroy(&self, owner: &str, user: &str) -> Result<(), KeyError> {
        self.dynamo
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk(owner, user)))
            .send()
            .await
            .map_err(dynamo_unavailable)?;
        self.cache.forget(owner, user);
        Ok(())
    }
}

/// Creates the key table (`pk` only; on-demand), for tests and `init-aws`.
pub async fn create_key_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), String> {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let made = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .send()
        .await;
    match made {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => Ok(()),
        Err(e) => Err(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()),
    }
}
