fn main() {
    eprintln!("vmadm: not built yet");
    std::process::exit(2);
}
