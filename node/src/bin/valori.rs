//! `valori`: audit a history. `verify` replays a data directory, a snapshot file or a live
//! node's log and checks every chain hash, event and snapshot; `diff` finds where two
//! histories part; `log` prints events for people; `at` answers a search, get or count as
//! the state stood at a past sequence number; `receipt` records a node's answer to a search
//! with the state it came from, and `verify-receipt` checks one against any copy of the
//! history. Exit status 0 when the history (or receipt) is good, 1 when it is not, 2 for a
//! usage error.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use valori_node::audit::{self, Source};

#[derive(Parser)]
#[command(
    name = "valori",
    version,
    about = "Audit Valori histories: verify, diff, log, at, receipt, verify-receipt"
)]
struct Cli {
    /// Print a replay's progress on standard error (the default when it is a terminal).
    #[arg(long, global = true)]
    progress: bool,
    /// Never print progress.
    #[arg(long, global = true, conflicts_with = "progress")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replays a history from its start and checks every chain hash, every event and every
    /// snapshot; reports the first bad sequence number and why.
    Verify {
        /// A data directory (read-only: its node may be running), a snapshot file, or a node's
        /// URL (`VALORI_API_KEY` for its key).
        source: String,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Threads for rebuilding the index during the replay (the result does not depend on
        /// it).
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// The first sequence number at which two histories differ, the two events there and the
    /// state hashes on each side.
    Diff {
        /// One history (directory, snapshot file or URL).
        a: String,
        /// The other.
        b: String,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Threads for the replays.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Answers a search, get or count as the state stood at a past sequence number (replayed
    /// from the nearest snapshot at or before it), with that seq's chain and state hashes:
    /// the API's answer, as JSON.
    At {
        /// A data directory, snapshot file or node URL.
        source: String,
        /// The sequence number.
        #[arg(long)]
        seq: u64,
        /// Threads for rebuilding the index during the replay.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[command(subcommand)]
        query: AtCommand,
    },
    /// Searches a live node and prints a receipt: the query, the answer, and the sequence
    /// number, chain hash and state hash of the state it came from (JSON).
    Receipt {
        /// The node's URL (`VALORI_API_KEY` for its key).
        url: String,
        #[command(flatten)]
        search: SearchArgs,
        /// Write the receipt to this file instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Checks a receipt against a copy of the history: the state at its seq must have its
    /// hashes, and its search there must give its answer, hit for hit.
    VerifyReceipt {
        /// The receipt file (`-` for standard input).
        receipt: String,
        /// A data directory, snapshot file or node URL.
        source: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Threads for rebuilding the index during the replay.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// The events of a history, one a line: sequence number, epoch, what it did.
    Log {
        /// A data directory or a node's URL.
        source: String,
        /// First sequence number shown.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last sequence number shown.
        #[arg(long)]
        to: Option<u64>,
        /// Only events on this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Only events naming this record key.
        #[arg(long)]
        key: Option<String>,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// A search's arguments (the API's search request).
#[derive(clap::Args)]
struct SearchArgs {
    /// Collection.
    #[arg(long)]
    collection: String,
    /// The query's components, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        required = true
    )]
    vector: Vec<f64>,
    /// Results wanted.
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// A filter in the API's JSON shape.
    #[arg(long)]
    filter: Option<String>,
    /// Candidate list of the graph walk.
    #[arg(long)]
    ef: Option<u32>,
    /// Scan the matching records exactly.
    #[arg(long)]
    exact: bool,
    /// What each hit carries besides id, key, tag, distance and similarity (payload, document,
    /// vector, metadata; comma-separated).
    #[arg(long, value_delimiter = ',')]
    include: Vec<String>,
}

impl SearchArgs {
    fn request(self) -> Result<valori_api::SearchRequest, ExitCode> {
        let include = if self.include.is_empty() {
            None
        } else {
            Some(
                self.include
                    .iter()
                    .map(|i| serde_json::from_value(serde_json::Value::String(i.clone())))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| usage(format!("--include: {e}")))?,
            )
        };
        Ok(valori_api::SearchRequest {
            vector: self.vector,
            k: self.k,
            tag: None,
            ef: self.ef,
            with_metadata: false,
            filter: json_arg("--filter", &self.filter)?,
            score_threshold: None,
            exact: self.exact,
            include,
            at_seq: None,
            hashes: false,
        })
    }
}

#[derive(Subcommand)]
enum AtCommand {
    /// The k nearest records.
    Search(SearchArgs),
    /// Records by key.
    Get {
        /// Collection.
        #[arg(long)]
        collection: String,
        /// Keys.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
    },
    /// How many records match.
    Count {
        /// Collection.
        #[arg(long)]
        collection: String,
        /// A filter in the API's JSON shape.
        #[arg(long)]
        filter: Option<String>,
    },
}

fn usage(message: String) -> ExitCode {
    eprintln!("valori: {message}");
    ExitCode::from(2)
}

fn json_arg<T: serde::de::DeserializeOwned>(
    name: &str,
    s: &Option<String>,
) -> Result<Option<T>, ExitCode> {
    s.as_ref()
        .map(|s| serde_json::from_str(s).map_err(|e| usage(format!("{name}: {e}"))))
        .transpose()
}

fn source(s: &str) -> Result<Source, ExitCode> {
    Source::parse(s).map_err(|e| {
        eprintln!("valori: {e}");
        ExitCode::from(2)
    })
}

fn run(cli: Cli) -> Result<ExitCode, ExitCode> {
    match cli.command {
        Command::Verify {
            source: s,
            json,
            threads,
        } => {
            let src = source(&s)?;
            let started = std::time::Instant::now();
            let r = audit::verify(&src, threads);
            let secs = started.elapsed().as_secs_f64();
            if json {
                println!("{}", serde_json::to_string(&r).expect("serializable"));
            } else {
                println!("source        {}", r.source);
                println!(
                    "replayed from {}",
                    if r.replayed_from == 0 {
                        "the empty state".to_string()
                    } else {
                        format!("the snapshot at seq {}", r.replayed_from)
                    }
                );
                println!(
                    "events        {} ({:.0}/s)",
                    r.events,
                    r.events as f64 / secs.max(1e-9)
                );
                println!("snapshots     {:?}", r.snapshots);
                println!("seq           {}", r.seq);
                println!("chain hash    {}", r.chain_hash);
                println!("state hash    {}", r.state_hash);
                match &r.problem {
                    None => println!("verdict       good"),
                    Some(p) => println!("verdict       BAD: {p}"),
                }
            }
            Ok(if r.problem.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Diff {
            a,
            b,
            json,
            threads,
        } => {
            let (a, b) = (source(&a)?, source(&b)?);
            let d = audit::diff(&a, &b, threads).map_err(|p| {
                eprintln!("valori: {p}");
                ExitCode::from(1)
            })?;
            if json {
                println!("{}", serde_json::to_string(&d).expect("serializable"));
            } else {
                match d.seq {
                    None => println!("equal: both histories hold the same {} events", d.heads.0),
                    Some(seq) => {
                        println!("the histories differ from seq {seq}");
                        let none = || "(none: the log ends before it)".to_string();
                        println!("  {}: {}", d.a, d.event_a.clone().unwrap_or_else(none));
                        println!("    state hash {}", d.state_a.clone().unwrap_or_default());
                        println!("  {}: {}", d.b, d.event_b.clone().unwrap_or_else(none));
                        println!("    state hash {}", d.state_b.clone().unwrap_or_default());
                        println!("  heads: {} and {}", d.heads.0, d.heads.1);
                    }
                }
                if let Some(p) = &d.problem {
                    println!("  warning: {p}");
                }
            }
            Ok(if d.seq.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::At {
            source: s,
            seq,
            threads,
            query,
        } => {
            let src = source(&s)?;
            let (collection, q) = match query {
                AtCommand::Search(args) => (
                    args.collection.clone(),
                    audit::AtQuery::Search(args.request()?),
                ),
                AtCommand::Get { collection, keys } => (
                    collection,
                    audit::AtQuery::Get(valori_api::GetRecords {
                        keys: Some(keys),
                        ids: None,
                        include: None,
                    }),
                ),
                AtCommand::Count { collection, filter } => (
                    collection,
                    audit::AtQuery::Count(valori_api::Count {
                        filter: json_arg("--filter", &filter)?,
                    }),
                ),
            };
            match audit::at(&src, seq, &collection, &q, threads) {
                Ok(answer) => {
                    println!("{answer}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(p) => {
                    eprintln!("valori: {p}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Receipt { url, search, out } => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(usage(format!(
                    "{url}: a receipt is of a live node's answer: give its http:// or https:// URL"
                )));
            }
            let collection = search.collection.clone();
            let r = audit::receipt(url.trim_end_matches('/'), &collection, search.request()?)
                .map_err(|p| {
                    eprintln!("valori: {p}");
                    ExitCode::from(1)
                })?;
            let text = serde_json::to_string_pretty(&r).expect("serializable");
            match out {
                None => println!("{text}"),
                Some(path) => std::fs::write(&path, text + "\n").map_err(|e| {
                    eprintln!("valori: writing {}: {e}", path.display());
                    ExitCode::from(1)
                })?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyReceipt {
            receipt,
            source: s,
            json,
            threads,
        } => {
            let text = if receipt == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&receipt)
            }
            .map_err(|e| usage(format!("reading {receipt}: {e}")))?;
            let r: audit::Receipt = serde_json::from_str(&text)
                .map_err(|e| usage(format!("{receipt} is not a receipt: {e}")))?;
            let src = source(&s)?;
            let outcome = audit::verify_receipt(&r, &src, threads);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "receipt": receipt,
                        "source": src.name(),
                        "seq": r.seq,
                        "good": outcome.is_ok(),
                        "problem": outcome.as_ref().err(),
                    })
                );
            } else {
                match &outcome {
                    Ok(()) => println!(
                        "good: {} answered this search from seq {} (chain hash {}), and {} gives the same {} results there",
                        r.node,
                        r.seq,
                        r.chain_hash,
                        src.name(),
                        r.results.len()
                    ),
                    Err(p) => println!("BAD: {p}"),
                }
            }
            Ok(if outcome.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Log {
            source: s,
            from,
            to,
            collection,
            key,
            json,
        } => {
            let src = source(&s)?;
            let lines = audit::log_lines(&src, from, to, collection.as_deref(), key.as_deref())
                .map_err(|p| {
                    eprintln!("valori: {p}");
                    ExitCode::from(1)
                })?;
            for (seq, epoch, text) in lines {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"seq": seq, "epoch": epoch, "event": text})
                    );
                } else {
                    println!("{seq:>8}  epoch {epoch:<3} {text}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = cli.progress || (!cli.quiet && std::io::stderr().is_terminal());
    audit::PROGRESS.store(progress, std::sync::atomic::Ordering::Relaxed);
    run(cli).unwrap_or_else(|code| code)
}
