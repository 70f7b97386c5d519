//! Links the release walship with the functions it runs laid out together (walship.order, written
//! by `make orderfile`), so the kernel maps the ~2 MB of code a replicator runs instead of 6-7 MB
//! of its ~12 MB of text. Only where rustc links with lld by default (x86_64 Linux); a symbol the
//! file names that the binary lacks (a renamed function, an updated dependency) is skipped.

fn main() {
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("walship.order");
    println!("cargo:rerun-if-changed={}", order.display());
    let target = std::env::var("TARGET").unwrap_or_default();
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    if release && target == "x86_64-unknown-linux-gnu" && order.exists() {
        println!(
            "cargo:rustc-link-arg-bin=walship=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=walship=-Wl,--no-warn-symbol-ordering");
    }
}
