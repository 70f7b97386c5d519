//! `count-proxy HOST:PORT`: the testkit's counting proxy as a program, for benchmarks.
//!
//! Listens on 127.0.0.1 and prints its port on the first line of stdout. Then reads commands,
//! one a line, from stdin: `reset` forgets the requests counted so far (answers `ok`), `dump`
//! prints them as one JSON line, `[["PUT","/bucket/key"],...]`. When stdin closes it prints
//! them a last time and exits.

use std::io::{BufRead, Write};
use std::net::{SocketAddr, ToSocketAddrs};

use testkit::{Proxy, Request};

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json(requests: &[Request]) -> String {
    let items: Vec<String> = requests
        .iter()
        .map(|(m, p)| format!("[{},{}]", json_string(m), json_string(p)))
        .collect();
    format!("[{}]", items.join(","))
}

fn main() {
    let Some(upstream) = std::env::args().nth(1) else {
        eprintln!("usage: count-proxy HOST:PORT");
        std::process::exit(2);
    };
    let upstream: SocketAddr = match upstream.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => {
            eprintln!("count-proxy: {upstream:?} is not an address (HOST:PORT)");
            std::process::exit(2);
        }
    };
    let proxy = Proxy::start(upstream);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", proxy.port());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.trim() {
            "reset" => {
                proxy.reset_counts();
                "ok".to_string()
            }
            "dump" => json(&proxy.requests()),
            "" => continue,
            other => format!("error: unknown command {other:?} (reset, dump)"),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
    let _ = writeln!(out, "{}", json(&proxy.requests()));
}
