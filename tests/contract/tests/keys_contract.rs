//! The key rings behind the one `KeyRing` port (issue 16):
//! the local one (keys wrapped under a master key) and the AWS one (KMS
//! data keys with the owner and user as encryption context, in a key
//! table), on moto. Same key for the same (owner, user), another for
//! another, destroyed for good.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use convo_domain::crypto::{CryptoError, Place};
use convo_domain::ports::{KeyError, KeyRing};

const HERE: Place<'static> = Place {
    owner: "toyco",
    conversation: "c1",
    item: "m1",
    field: "content",
};

async fn the_contract(ring: &dyn KeyRing, owner: &str) {
    let (mia_id, mia) = ring.current_key(owner, "mia").await.unwrap();
    let sealed = mia.seal(&HERE, b"a child's words").unwrap();
    let (again_id, again) = ring.current_key(owner, "mia").await.unwrap();
    assert_eq!(again_id, mia_id);
    assert_eq!(again.open(&HERE, &sealed).unwrap(), b"a child's words");
    let by_id = ring
        .key(owner, "mia", mia_id)
        .await
        .unwrap()
        .expect("the key by its id");
    assert_eq!(by_id.open(&HERE, &sealed).unwrap(), b"a child's words");
    let (leo_id, leo) = ring.current_key(owner, "leo").await.unwrap();
    assert_ne!(leo_id, mia_id);
    assert!(leo.open(&HERE, &sealed).is_err());
    // Another user's id names no key of mia's.
    assert!(ring.key(owner, "mia", leo_id).await.unwrap().is_none());
    assert!(
        ring.current_key("another-owner", "mia")
            .await
            .unwrap()
            .1
            .open(&HERE, &sealed)
            .is_err()
    );
    ring.destroy(owner, "mia").await.unwrap();
    ring.destroy(owner, "mia").await.unwrap();
    assert!(ring.key(owner, "mia", mia_id).await.unwrap().is_none());
    // A key made after the erasure is another key, with another id: the
    // old id still names nothing.
    let (fresh_id, fresh) = ring.current_key(owner, "mia").await.unwrap();
    assert_ne!(fresh_id, mia_id);
    assert!(ring.key(owner, "mia", mia_id).await.unwrap().is_none());
    assert_eq!(fresh.open(&HERE, &sealed), Err(CryptoError::Corrupt));
}

#[tokio::test]
async fn the_local_key_ring() {
    let master = convo_embedded::keys::load_or_create_master_key(None).unwrap();
    let ring = convo_embedded::keys::LocalKeyRing::open(None, master).unwrap();
    the_contract(&ring, "toyco").await;
}

#[tokio::test]
async fn the_kms_key_ring_on_moto() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the suite through ./tests/run, which starts moto"
    );
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let kms = aws_sdk_kms::Client::new(&sdk);
    let table = format!("keys-{}", ulid::Ulid::new().to_string().to_lowercase());
    convo_aws::keys::create_key_table(&dynamo, &table).await.unwrap();
    let key_id = kms.create_key().send().await.unwrap().key_metadata.unwrap().key_id;
    let ring = Arc::new(convo_aws::keys::KmsKeyRing::new(dynamo.clone(), &table, kms, &key_id));
    the_contract(ring.as_ref(), "toyco").await;

    // Warm: the cached key costs no KMS call.
    let (leo_id, _) = ring.current_key("toyco", "leo").await.unwrap();
    let before = ring.kms_calls.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..100 {
        ring.key("toyco", "leo", leo_id).await.unwrap().expect("leo's key");
    }
    assert_eq!(ring.kms_calls.load(std::sync::atomic::Ordering::Relaxed), before);

    // What the table holds is KMS's ciphertext, bound to its (owner, user):
    // moved to another user, it does not unwrap.
    let item = dynamo
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("K#toyco\u{1f}leo".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let wrapped = item["wrapped"].as_b().unwrap().clone();
    assert_ne!(wrapped.as_ref().len(), 32, "never the plain key");
    dynamo
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("K#toyco\u{1f}ava".into()))
        .item("kid", AttributeValue::N("7".into()))
        .item("wrapped", AttributeValue::B(wrapped))
        .send()
        .await
        .unwrap();
    let cold = convo_aws::keys::KmsKeyRing::new(dynamo, &table, aws_sdk_kms::Client::new(&sdk), &key_id);
    assert!(matches!(cold.key("toyco", "ava", 7).await, Err(KeyError::Corrupt(_))));
    assert!(cold.key("toyco", "leo", leo_id).await.unwrap().is_some());
    // A cold key costs one Decrypt, then none.
    assert_eq!(cold.kms_calls.load(std::sync::atomic::Ordering::Relaxed), 2);
    cold.key("toyco", "leo", leo_id).await.unwrap();
    assert_eq!(cold.kms_calls.load(std::sync::atomic::Ordering::Relaxed), 2);
}
