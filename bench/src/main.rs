//! `convo-bench`: the benchmark harness of issue 6. `bench/run` calls it
//! (with the peer's Python side and the load test); see BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use convo_bench::{drive, report};

#[derive(Parser)]
#[command(about = "convo's benchmark harness (issue 6); `bench/run` runs it all")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Grow one conversation through convo's DynamoDB and SQS adapters on
    /// AWS_ENDPOINT_URL (moto), recording every request (JSON lines).
    Cost {
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
        lengths: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        tail_reads: usize,
        /// Name of the table and queues to create.
        #[arg(long, default_value = "bench-cost")]
        prefix: String,
        #[arg(long)]
        out: PathBuf,
        /// Where to write the exchanges (the peer stores the same ones).
        #[arg(long)]
        exchanges: PathBuf,
    },
    /// What sealing costs (issue 16): write units per message in clear and
    /// sealed, and KMS calls per append warm and cold, as JSON.
    Encryption {
        /// Conversation lengths in messages (exchanges of two 200-character
        /// messages), each in clear and sealed.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        lengths: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        users: usize,
        /// Appends for the KMS counts (warm, then cold).
        #[arg(long, default_value_t = 1000)]
        appends: usize,
        #[arg(long, default_value = "bench-encryption")]
        prefix: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Concurrent writers appending to one conversation, then a count.
    Concurrency {
        #[arg(long, default_value_t = 8)]
        writers: usize,
        #[arg(long, default_value_t = 50)]
        appends: usize,
        #[arg(long, default_value = "bench-concurrency")]
        prefix: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Time from exec to the first Runtime API `next` request of each
    /// function binary in `--bin-dir`, and of the peer in Python.
    Coldstart {
        #[arg(long)]
        bin_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// A Python with boto3 and langchain-community (the peer).
        #[arg(long)]
        peer_python: Option<PathBuf>,
        #[arg(long, default_value = "bench-coldstart")]
        prefix: String,
        /// Measure only these functions (repeatable; default: all).
        #[arg(long)]
        only: Vec<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// What a user's context costs (issue 25): `conversations` sessions of
    /// one user with one agent, then `GET /users/{id}/context` for each
    /// `--max-messages`, billed (JSON).
    UserContext {
        #[arg(long, default_value_t = 3)]
        conversations: usize,
        /// Exchanges (two messages) per conversation.
        #[arg(long, default_value_t = 4)]
        exchanges: usize,
        #[arg(long, value_delimiter = ',', default_value = "15,50")]
        max_messages: Vec<usize>,
        #[arg(long, default_value = "bench-user-context")]
        prefix: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Bill the recorded requests and write the tables and the plot.
    Report {
        /// The directory `bench/run` wrote the results to.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cost {
            lengths,
            tail_reads,
            prefix,
            out,
            exchanges,
        } => drive::cost(&prefix, &lengths, tail_reads, &out, &exchanges).await,
        Command::Concurrency {
            writers,
            appends,
            prefix,
            out,
        } => match drive::concurrency(&prefix, writers, appends).await {
            Ok(r) => std::fs::write(&out, serde_json::to_vec_pretty(&r).expect("json"))
                .map_err(|e| e.to_string())
                .and_then(|()| match r.gapless_and_unique {
                    // A lost or repeated message is a bug, not a figure.
                    Some(false) => Err(format!(
                        "convo stored {} of {} messages, or not gapless",
                        r.stored, r.sent
                    )),
                    _ => Ok(()),
                }),
            Err(e) => Err(e),
        },
        Command::Coldstart {
            bin_dir,
            runs,
            peer_python,
            prefix,
            only,
            out,
        } => {
            report::coldstart_all(
                &bin_dir,
                runs,
                peer_python.as_deref(),
                &only,
                &prefix,
                &out,
                Duration::from_secs(30),
            )
            .await
        }
        Command::Encryption {
            lengths,
            users,
            appends,
            prefix,
            out,
        } => match drive::encryption(&prefix, &lengths, users, appends).await {
            Ok(r) => std::fs::write(&out, serde_json::to_vec_pretty(&r).expect("json")).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Command::UserContext {
            conversations,
            exchanges,
            max_messages,
            prefix,
            out,
        } => match convo_bench::user_context::run(&prefix, conversations, exchanges, &max_messages).await {
            Ok(r) => std::fs::write(&out, serde_json::to_vec_pretty(&r).expect("json")).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Command::Report { dir } => report::write(&dir),
    };
    if let Err(e) = result {
        eprintln!("convo-bench: {e}");
        std::process::exit(1);
    }
}
