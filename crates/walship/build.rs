//! Links the release walship with the functions it runs laid out together (walship.order, written
//! by `make orderfile`), so the kernel maps the ~2 MB of code a replicator runs instead of 6-7 MB
//! of its ~12 MB of text. Only where rustc links with its own lld by default (x86_64 Linux) and
//! nobody chose another linker, which may not know the option; a symbol the file names that the
//! binary lacks (a renamed function, an updated dependency) is skipped.

fn main() {
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("walship.order");
    println!("cargo:rerun-if-changed={}", order.display());
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let release = var("PROFILE") == "release";
    let default_lld = var("TARGET") == "x86_64-unknown-linux-gnu"
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !["linker", "link-self-contained"]
            .iter()
            .any(|flag| var("CARGO_ENCODED_RUSTFLAGS").contains(flag));
    if release && default_lld && order.exists() {
        println!(
            "cargo:rustc-link-arg-bin=walship=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=walship=-Wl,--no-warn-symbol-ordering");
    }
}
