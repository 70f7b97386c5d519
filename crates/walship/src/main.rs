use clap::{Parser, Subcommand};

/// Streaming SQLite replication to object storage, compatible with Litestream 0.5.
#[derive(Parser)]
#[command(name = "walship", version = walship::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Version => println!("walship v{}", walship::VERSION),
    }
    Ok(())
}
