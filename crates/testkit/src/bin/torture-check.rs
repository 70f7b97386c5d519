//! `torture-check --seed N [--big P] [--huge TX:MIB] DB...`: checks databases against a torture
//! workload (see `testkit::torture`), for looking into a failed run's files by hand.

use std::path::PathBuf;

use clap::Parser;
use testkit::torture::{parse_huge, Workload};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    seed: u64,
    #[arg(long, default_value_t = 0.0)]
    big: f64,
    /// The huge transaction, `TX:MIB`.
    #[arg(long, value_parser = parse_huge)]
    huge: Option<(u64, u64)>,
    dbs: Vec<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let w = Workload {
        seed: args.seed,
        big: args.big,
        huge: args.huge,
    };
    let mut ok = true;
    for db in &args.dbs {
        match w.check(db) {
            Ok(k) => println!("{}: the state after transaction {k}", db.display()),
            Err(e) => {
                println!("{e}");
                ok = false;
            }
        }
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
