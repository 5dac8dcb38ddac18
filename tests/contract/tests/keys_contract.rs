//! The key rings behind the one `KeyRing` port (issue 16, in progress):
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
    let mia = ring.data_key(owner, "mia").await.unwrap();
    let sealed = mia.seal(&HERE, b"a child's words").unwrap();
    let again = ring.data_key(owner, "mia").await.unwrap();
    assert_eq!(again.open(&HERE, &sealed).unwrap(), b"a child's words");
    assert!(ring.data_key(owner, "leo").await.unwrap().open(&HERE, &sealed).is_err());
    assert!(
        ring.data_key("another-owner", "mia")
            .await
            .unwrap()
            .open(&HERE, &sealed)
            .is_err()
    );
    ring.destroy(owner, "mia").await.unwrap();
    ring.destroy(owner, "mia").await.unwrap();
    assert!(ring.existing_key(owner, "mia").await.unwrap().is_none());
    let fresh = ring.data_key(owner, "mia").await.unwrap();
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
    let before = ring.kms_calls.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..100 {
        ring.data_key("toyco", "leo").await.unwrap();
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
        .item("wrapped", AttributeValue::B(wrapped))
        .send()
        .await
        .unwrap();
    let cold = convo_aws::keys::KmsKeyRing::new(dynamo, &table, aws_sdk_kms::Client::new(&sdk), &key_id);
    assert!(matches!(
        cold.existing_key("toyco", "ava").await,
        Err(KeyError::Corrupt(_))
    ));
    assert!(cold.existing_key("toyco", "leo").await.unwrap().is_some());
}
