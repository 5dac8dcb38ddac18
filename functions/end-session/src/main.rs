//! Lambda entry point. The AWS adapters (DynamoDB store, SQS queues) that
//! this binary wires on Lambda are not built yet: until then the handler in
//! `lib.rs` runs inside `convo-local`, and this binary refuses to start
//! rather than pretend.

fn main() {
    eprintln!(
        "{}: the AWS adapters are not built yet; run the functions through `convo-local serve`",
        env!("CARGO_PKG_NAME")
    );
    std::process::exit(2);
}
