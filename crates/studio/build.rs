// The UI is embedded at compile time: rebuild when any asset changes.
fn main() {
    println!("cargo:rerun-if-changed=assets");
}
