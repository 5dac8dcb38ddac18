//! The key ring on AWS (issue 16, in progress; not used yet): one data key
//! per (owner, user), made by KMS `GenerateDataKey` under the stack's key
//! with the encryption context `{owner, user}`, stored only wrapped (KMS's
//! ciphertext blob) in a key table of its own — apart from the data table,
//! whose point-in-time backups keep everything for 35 days — and unwrapped
//! by KMS `Decrypt` with the same context. Unwrapped keys are cached in
//! memory (bounded, for a bounded time), so a warm function makes no KMS
//! call per append. Destroying a user's key (a DeleteItem) makes every
//! ciphertext of theirs unreadable for good, backups included.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use convo_domain::crypto::DataKey;
use convo_domain::ports::{KeyError, KeyRing};

/// Keys kept unwrapped in memory, and for how long.
pub const CACHE_ENTRIES: usize = 10_000;
pub const CACHE_TTL: Duration = Duration::from_secs(15 * 60);

fn unavailable(e: impl std::error::Error) -> KeyError {
    KeyError::Unavailable(aws_sdk_kms::error::DisplayErrorContext(e).to_string())
}

/// (owner, user) → when the key was unwrapped, and the key.
type Cache = HashMap<(String, String), (Instant, Arc<DataKey>)>;

pub struct KmsKeyRing {
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    kms: aws_sdk_kms::Client,
    key_id: String,
    cache: Mutex<Cache>,
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
            cache: Mutex::new(HashMap::new()),
            kms_calls: AtomicU64::new(0),
        }
    }

    fn cached(&self, owner: &str, user: &str) -> Option<Arc<DataKey>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&(owner.to_string(), user.to_string()))
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, k)| k.clone())
    }

    fn remember(&self, owner: &str, user: &str, key: Arc<DataKey>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_ENTRIES {
                // Still full of fresh keys: start over (a bounded cache,
                // not a precise one; a miss costs one Decrypt).
                cache.clear();
            }
        }
        cache.insert((owner.to_string(), user.to_string()), (Instant::now(), key));
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

    async fn stored(&self, owner: &str, user: &str) -> Result<Option<Vec<u8>>, KeyError> {
        let out = self
            .dynamo
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk(owner, user)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| KeyError::Unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
        Ok(out.item.and_then(|mut i| match i.remove("wrapped") {
            Some(AttributeValue::B(b)) => Some(b.into_inner()),
            _ => None,
        }))
    }
}

#[async_trait]
impl KeyRing for KmsKeyRing {
    async fn data_key(&self, owner: &str, user: &str) -> Result<Arc<DataKey>, KeyError> {
        if let Some(k) = self.existing_key(owner, user).await? {
            return Ok(k);
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
        let put = self
            .dynamo
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(pk(owner, user)))
            .item("wrapped", AttributeValue::B(blob.clone().into_inner().into()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        let key = match put {
            Ok(_) => Arc::new(DataKey::from_bytes(plain.as_ref()).map_err(|e| KeyError::Corrupt(e.to_string()))?),
            // Another instance made one first: theirs is the key.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                let blob = self
                    .stored(owner, user)
                    .await?
                    .ok_or_else(|| KeyError::Unavailable("the key vanished".into()))?;
                self.unwrap_key(owner, user, blob).await?
            }
            Err(e) => {
                return Err(KeyError::Unavailable(
                    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
                ));
            }
        };
        self.remember(owner, user, key.clone());
        Ok(key)
    }

    async fn existing_key(&self, owner: &str, user: &str) -> Result<Option<Arc<DataKey>>, KeyError> {
        if let Some(k) = self.cached(owner, user) {
            return Ok(Some(k));
        }
        let Some(blob) = self.stored(owner, user).await? else {
            return Ok(None);
        };
        let key = self.unwrap_key(owner, user, blob).await?;
        self.remember(owner, user, key.clone());
        Ok(Some(key))
    }

    async fn destroy(&self, owner: &str, user: &str) -> Result<(), KeyError> {
        self.dynamo
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk(owner, user)))
            .send()
            .await
            .map_err(|e| KeyError::Unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(owner.to_string(), user.to_string()));
        Ok(())
    }
}

/// Creates the key table (`pk` only; on-demand), for tests and `init-aws`
/// once the key ring is used.
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
